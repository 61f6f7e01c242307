"""The demo fits its models, says what they found, and writes a report per case."""

from __future__ import annotations

import re

import pytest

from modeshift import demo


def test_demo_prints_findings_and_writes_reports(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the demo's reports need matplotlib: pip install modeshift[plot]")
    summary = demo.run(tmp_path)
    assert capsys.readouterr().out.strip() == summary.strip()
    # Hamilton's recession regime
    assert "2 regimes; regime 0 = contraction, mean growth -0.36%/quarter, expected duration 4.1 quarters" in summary
    assert "expected duration 10.4 quarters" in summary and "log-likelihood -181.263" in summary
    assert re.search(r"matches NBER recessions in \d+% of quarters", summary)
    assert "BIC chose 2 regimes among 1-4" in summary  # earthquakes
    assert "mean flow 1097 in 1871-1898, 851 in 1899-1970" in summary  # the Nile's level shift
    assert re.search(r"BIC chose 2 modes among 1-3; mode accuracy 9\d\.\d%", summary)  # thermostat
    assert re.search(r"heating -> cooling above 2\d\.\d degrees \(true: above 22\.0\)", summary)
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    reports = re.findall(r'<a href="([^"]+)">', index)
    assert len(reports) == 5
    for report in reports:
        assert (tmp_path / report).read_text(encoding="utf-8").count('src="data:image/png;base64,') >= 2


def test_main_runs_the_demo(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "run", lambda: calls.append("run"))
    demo.main()
    assert calls == ["run"]
