"""draw_rows: one state per row of probabilities, in proportion, never a state of probability 0."""

from __future__ import annotations

import numpy as np

from modeshift.transitions import draw_rows


def test_draws_follow_the_probabilities_of_each_row():
    rows = np.array([[0.2, 0.5, 0.3], [0.0, 0.0, 4.0], [1.0, 0.0, 3.0]])  # unnormalised rows too
    draws = draw_rows(np.repeat(rows, 20000, axis=0), np.random.default_rng(0)).reshape(3, 20000)
    frequencies = np.stack([np.bincount(row, minlength=3) for row in draws]) / 20000
    expected = rows / rows.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(frequencies, expected, atol=0.01)  # 3 standard errors at most
    assert (frequencies[expected == 0] == 0).all()


class _Extremes:
    """A generator whose uniforms are 0 and the largest double below 1."""

    def random(self, shape):
        return np.resize([0.0, np.nextafter(1.0, 0.0)], shape)


def test_the_ends_of_the_unit_interval_draw_no_impossible_state():
    rows = np.array([[0.0, 0.1, 0.2, 0.0], [0.0, 0.1, 0.2, 0.0]])
    assert draw_rows(rows, _Extremes()).tolist() == [1, 2]
