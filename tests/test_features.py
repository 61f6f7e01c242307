"""Feature maps: the columns they promise, determinism, their state as data, clear errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from modeshift.features import Custom, Polynomial, RadialBasis, RandomFourier, feature_map


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(loc=[5.0, -2.0], scale=[3.0, 0.5], size=(300, 2))


def test_polynomial_is_every_monomial_of_the_standardised_inputs(x):
    phi = Polynomial(degree=3).fit(x)
    u = (x - x.mean(axis=0)) / x.std(axis=0)
    expected = [
        np.prod(u[:, list(c)], axis=1) for d in (1, 2, 3) for c in itertools.combinations_with_replacement(range(2), d)
    ]
    assert phi.n_outputs == 9
    np.testing.assert_allclose(phi.transform(x), np.column_stack(expected), atol=1e-12)


def test_polynomial_holds_far_inputs_at_the_edge_of_the_data(x):
    phi = Polynomial(degree=2).fit(x)
    far = np.array([[1e6, -2.0]])
    edge = np.array([[x[:, 0].max() + (np.ptp(x[:, 0])) / 2, -2.0]])
    np.testing.assert_allclose(phi.transform(far), phi.transform(edge))
    linear = Polynomial(degree=1).fit(x)  # the linear map is linear everywhere
    np.testing.assert_allclose(linear.transform(far)[0, 0], (1e6 - x[:, 0].mean()) / x[:, 0].std())


def test_radial_basis_centres_and_median_width(x):
    phi = RadialBasis(n_centres=8, random_state=3).fit(x)
    centres = phi.centres_
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)[~np.eye(8, dtype=bool)]
    assert centres.shape == (8, 2) and phi.width_ == pytest.approx(np.median(gaps))
    features = phi.transform(x)
    assert features.shape == (300, 2 + 8) and np.all((features[:, 2:] > 0) & (features[:, 2:] <= 1))
    np.testing.assert_array_equal(RadialBasis(n_centres=8, random_state=3).fit(x).centres_, centres)


def test_random_fourier_approximates_the_gaussian_kernel(x):
    phi = RandomFourier(n_features=20000, lengthscale=1.5, random_state=1).fit(x)
    waves = phi.transform(x[:20])[:, 2:]
    u = (x[:20] - phi.location_) / phi.scale_
    kernel = np.exp(-np.square(u[:, None] - u[None]).sum(axis=2) / (2 * 1.5**2))
    np.testing.assert_allclose(waves @ waves.T, kernel, atol=0.03)
    same = RandomFourier(n_features=20000, lengthscale=1.5, random_state=1).fit(x)
    np.testing.assert_array_equal(same.frequencies_, phi.frequencies_)


@pytest.mark.parametrize("spec", [Polynomial(2), RadialBasis(5), RandomFourier(7), "polynomial", {"kind": "rbf"}])
def test_state_round_trip(x, spec):
    fitted = feature_map(spec).fit(x)
    config, arrays = fitted.state()
    assert all(isinstance(a, (np.ndarray, float)) for a in arrays.values())
    rebuilt = feature_map(config, arrays)
    assert rebuilt == fitted
    np.testing.assert_array_equal(rebuilt.transform(x), fitted.transform(x))
    assert rebuilt.n_outputs == fitted.n_outputs == fitted.transform(x).shape[1]


@pytest.mark.parametrize(("n_inputs", "degree"), itertools.product((1, 2, 4), (1, 2, 3)))
def test_polynomial_width_is_the_number_of_monomials(n_inputs, degree):
    phi = Polynomial(degree).fit(np.random.default_rng(n_inputs).normal(size=(20, n_inputs)))
    assert phi.n_outputs == phi.transform(np.zeros((1, n_inputs))).shape[1]


def test_feature_map_copies_a_given_map(x):
    given = Polynomial(2)
    feature_map(given).fit(x)
    assert given.location_ is None


def test_custom_function_used_as_given_but_not_saved(x):
    def squares(a):
        return np.hstack([a, a**2])

    phi = feature_map(squares).fit(x)
    assert isinstance(phi, Custom) and phi.linear_columns == 0
    np.testing.assert_array_equal(phi.transform(x), squares(x))
    with pytest.raises(TypeError, match="squares.*cannot be saved"):
        phi.state()


def test_custom_width_needs_no_call_beyond_the_data(x):
    calls = []

    def direction(a):  # the unit vector: undefined at the origin, which the data never reach
        calls.append(len(a))
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    phi = Custom(direction).fit(x)
    assert phi.n_outputs == 2 and calls == [300]


def test_errors_say_what_is_wrong(x):
    with pytest.raises(ValueError, match="not fit"):
        Polynomial().transform(x)
    with pytest.raises(ValueError, match="2 input column"):
        Polynomial().fit(x).transform(x[:, :1])
    with pytest.raises(ValueError, match="non-finite"):
        Polynomial().fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="degree"):
        Polynomial(0)
    with pytest.raises(ValueError, match="features must be one of"):
        feature_map("splines")
    with pytest.raises(ValueError, match="bad options"):
        feature_map({"kind": "rbf", "centres": 3})
    with pytest.raises(ValueError, match=r"must return an \(300, m\) array"):
        Custom(lambda a: a.sum(axis=1)).fit(x)
