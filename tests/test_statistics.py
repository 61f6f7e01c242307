"""Sufficient statistics add up across shards: the E-step can be distributed."""

import numpy as np
import pytest

from modeshift import HMM, Sequences
from modeshift.statistics import Stacked, Statistics, bind_rows, holds_kept, keep_rows


@pytest.mark.parametrize("emission", ["gaussian", "gmm", "categorical", "poisson"])
def test_sharded_e_step_equals_whole(emission):
    rng = np.random.default_rng(3)
    model = HMM(3, emission=emission, n_mix=2, random_state=0)
    if emission in ("gaussian", "gmm"):
        data = [rng.normal(size=(n, 2)) for n in (40, 17, 63, 5)]
    elif emission == "categorical":
        data = [rng.integers(0, 5, size=n) for n in (40, 17, 63, 5)]
    else:
        data = [rng.poisson(3.0, size=(n, 2)) for n in (40, 17, 63, 5)]
    data[2] = data[2].astype(float)
    data[2][::7] = np.nan  # missing steps too
    model.fit(data)
    whole = model.expected_statistics(Sequences.from_arrays(data))
    shards = sum(model.expected_statistics(Sequences.from_arrays(part)) for part in (data[:1], data[1:3], data[3:]))

    def check(a, b):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], Statistics):
                check(a[key], b[key])
            else:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-10)

    check(whole, shards)


def test_statistics_refuse_mismatched_fields():
    with pytest.raises(ValueError):
        Statistics(a=np.ones(2)) + Statistics(b=np.ones(2))


# ------------------------------------------------------------ residual diagnostics
def _residuals(n: int = 300, seed: int = 0) -> np.ndarray:
    """An AR(1) series with a variance that grows: every test has something to find."""
    rng = np.random.default_rng(seed)
    e = rng.standard_t(5, size=n) * np.linspace(1.0, 2.0, n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = 0.3 * x[t - 1] + e[t]
    return x


@pytest.mark.parametrize("model_df", [0, 2])
def test_ljung_box_equals_statsmodels(model_df):
    from statsmodels.stats.diagnostic import acorr_ljungbox

    from modeshift.statistics import ljung_box

    x = _residuals()
    q, p = ljung_box(x, lags=12, model_df=model_df)
    expected = acorr_ljungbox(x, lags=12, model_df=model_df)
    np.testing.assert_allclose(q, expected["lb_stat"], rtol=1e-12)
    np.testing.assert_allclose(p, expected["lb_pvalue"], rtol=1e-9)


def test_ljung_box_by_hand_on_a_tiny_series():
    from modeshift.statistics import ljung_box

    x = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    c = x - x.mean()
    r1 = (c[1:] @ c[:-1]) / (c @ c)
    q, _ = ljung_box(x, lags=1)
    assert q[0] == pytest.approx(5 * 7 * r1**2 / 4)


def test_jarque_bera_equals_statsmodels():
    from statsmodels.stats.stattools import jarque_bera as reference

    from modeshift.statistics import jarque_bera

    x = _residuals()
    np.testing.assert_allclose(jarque_bera(x), reference(x), rtol=1e-12)


def test_heteroskedasticity_equals_statsmodels_breakvar():
    from statsmodels.tsa.stattools import breakvar_heteroskedasticity_test

    from modeshift.statistics import heteroskedasticity

    x = _residuals()
    x[[3, 250, 251]] = np.nan  # unequal numbers of observed values in the two thirds
    expected = breakvar_heteroskedasticity_test(x, subset_length=int(np.round(len(x) / 3)))
    np.testing.assert_allclose(heteroskedasticity(x), (expected.statistic, expected.pvalue), rtol=1e-12)


def test_residual_diagnostics_refuse_too_few_values():
    from modeshift.statistics import heteroskedasticity, jarque_bera, ljung_box

    with pytest.raises(ValueError, match="lags must be"):
        ljung_box(np.ones(5), lags=5)
    with pytest.raises(ValueError, match="at least 3"):
        jarque_bera([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="2 observed values"):
        heteroskedasticity([1.0, 2.0, 3.0])


def test_stacked_rows_are_joined_once_and_read_as_one_array():
    """An iterative M-step reads the rows at every step: the blocks are joined on the first read only."""
    blocks = [np.arange(6.0).reshape(3, 2), np.ones((1, 2)), np.zeros((2, 2))]
    stacked = Stacked(blocks[0]) + Stacked(blocks[1]) + Stacked(blocks[2])
    size = stacked.__sizeof__()
    first = stacked.array
    np.testing.assert_array_equal(first, np.concatenate(blocks))
    assert stacked.array is first and stacked.terms(lambda rows: rows) is first
    assert stacked.__sizeof__() == size  # the rows counted once, joined or not
    assert Stacked(blocks[0]).array is blocks[0]


def test_kept_rows_are_found_wherever_the_statistics_hold_them():
    rows = Statistics(pairs=Stacked(np.ones((3, 2))), counts=np.ones(2))
    kept: dict = {}
    sent = keep_rows((1.0, rows), kept)
    assert holds_kept(sent) and not holds_kept((1.0, rows)) and not holds_kept(Statistics(counts=np.ones(2)))
    bound = bind_rows(sent, lambda function, paths: function(*(kept[path] for path in paths)))
    assert bound[1]["pairs"].terms(np.sum) == 6.0
