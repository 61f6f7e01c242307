"""The demo runs on the bundled data and reports what it found."""

from modeshift import demo


def test_demo_prints_findings(capsys):
    demo.main()
    out = capsys.readouterr().out
    assert "BIC chooses K=" in out
    assert "Old Faithful" in out
    assert "log-likelihood -181.263" in out
