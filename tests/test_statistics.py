"""Sufficient statistics add up across shards: the E-step can be distributed."""

import numpy as np
import pytest

from modeshift import HMM, Sequences
from modeshift.statistics import Statistics


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
