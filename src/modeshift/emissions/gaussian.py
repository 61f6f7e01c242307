"""Multivariate Gaussian emissions with full, diagonal, spherical or tied covariance."""

from __future__ import annotations

import numpy as np

from modeshift._kernels import gaussian_log_density, weighted_moments
from modeshift.data import Sequences, check_array, check_covariances
from modeshift.dynamics import missingness_patterns
from modeshift.emissions.base import Emission
from modeshift.emissions.kmeans import kmeans
from modeshift.statistics import Statistics

__all__ = ["COVARIANCE_TYPES", "Gaussian"]

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
_MAX_INIT_POINTS = 20_000


class Gaussian(Emission):
    """y_t | z_t = k ~ N(mean_k, covariance_k).

    Covariances are stored as full (K, D, D) matrices whatever their type; the
    type constrains the M-step and the parameter count. Missing dimensions are
    integrated out: the likelihood uses the marginal of the observed dimensions,
    and the statistics use the conditional mean and covariance of the missing
    ones (exact EM). Wholly missing steps carry no evidence and are skipped.

    The M-step is the posterior mode under the penalty ``-reg_covar / 2 *
    trace(inv(covariance))`` per covariance matrix, which adds ``reg_covar`` to
    the diagonal of the scatter: covariances stay positive definite even for a
    state that explains a single point, and EM stays monotone in the penalised
    objective.

    Parameters
    ----------
    n_states : int
    covariance : {"full", "diag", "spherical", "tied"}
    reg_covar : float
    groups : (K,) int array, optional
        For ``"tied"``: states with the same group share one covariance
        (default: all states share one).
    """

    parameters = {"means_": "means", "covars_": "covariances"}
    writes_out = True  # log_likelihoods(values, out)

    def __init__(
        self,
        n_states: int,
        covariance: str = "full",
        reg_covar: float = 1e-6,
        groups: np.ndarray | None = None,
    ):
        super().__init__(n_states)
        if covariance not in COVARIANCE_TYPES:
            raise ValueError(f"covariance must be one of {COVARIANCE_TYPES}, got {covariance!r}")
        if reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
        self.covariance = covariance
        self.reg_covar = reg_covar
        self.groups = np.zeros(n_states, dtype=np.int64) if groups is None else np.asarray(groups)
        self.means: np.ndarray | None = None
        self.covariances: np.ndarray | None = None

    @property
    def n_features(self) -> int | None:
        for value in (self.means, self.covariances):
            if value is not None:
                return value.shape[-1]
        return None

    def validate(self, seqs: Sequences) -> Sequences:
        return seqs.require(allow_missing=True, n_features=self.n_features, model="a Gaussian emission")

    # ----------------------------------------------------------------- parameters
    def set(self, name: str, value: np.ndarray) -> None:
        if name == "means":
            self.means = check_array("means_", value, (self.n_states, self.n_features))
        elif name == "covariances":
            self.covariances = self._full_covariances(value)
        else:
            raise AttributeError(name)

    def _full_covariances(self, value: np.ndarray) -> np.ndarray:
        """Accept full (K, D, D) matrices or hmmlearn's compact form for the type."""
        array = np.asarray(value, dtype=np.float64)
        k, d = self.n_states, self.n_features
        if self.covariance == "diag" and array.ndim == 2:
            array = np.stack([np.diag(row) for row in array]) if array.shape[0] == k else array
        elif self.covariance == "spherical" and array.ndim == 1:
            if d is None:
                raise ValueError("set means_ before spherical covars_ (the dimension is unknown)")
            array = array[:, None, None] * np.eye(d)
        elif self.covariance == "tied" and array.ndim == 2:
            array = np.broadcast_to(array, (k, *array.shape)).copy()
        if array.ndim != 3 or array.shape[0] != k:
            raise ValueError(
                f"covars_ must be ({k}, D, D) matrices or the compact form for "
                f"covariance={self.covariance!r}, got shape {array.shape}"
            )
        array = check_covariances("covars_", array, d)
        off_diagonal = array - np.einsum("kii->ki", array)[:, :, None] * np.eye(array.shape[-1])
        if self.covariance in ("diag", "spherical") and np.abs(off_diagonal).max() > 0:
            raise ValueError(f"covars_ must be diagonal for covariance={self.covariance!r}")
        if self.covariance == "tied":
            for group in np.unique(self.groups):
                block = array[self.groups == group]
                if not np.allclose(block, block[0], rtol=1e-10, atol=0.0):
                    raise ValueError("covars_ must be one shared matrix (per tied group) for covariance='tied'")
        if self.covariance == "spherical" and not np.allclose(np.einsum("kii->ki", array), array[:, :1, 0]):
            raise ValueError("covars_ must be multiples of the identity for covariance='spherical'")
        return array

    def initialize(self, values: np.ndarray, rng: np.random.Generator) -> None:
        """k-means++ centres as means; within-cluster covariances (shrunk to the pooled one)."""
        points = _complete_rows(values)
        if len(points) > _MAX_INIT_POINTS:
            points = points[rng.choice(len(points), _MAX_INIT_POINTS, replace=False)]
        self.means, labels = kmeans(points, self.n_states, rng)
        d = points.shape[1]
        pooled = np.atleast_2d(np.cov(points, rowvar=False, bias=True)) + self.reg_covar * np.eye(d)
        if np.linalg.eigvalsh(pooled)[0] <= 1e-12 * max(np.trace(pooled), 1.0):  # degenerate data
            pooled += max(np.trace(pooled) / d, 1.0) * 1e-3 * np.eye(d)
        covariances = np.empty((self.n_states, d, d))
        for k in range(self.n_states):
            members = points[labels == k]
            if len(members) > d:
                within = np.atleast_2d(np.cov(members, rowvar=False, bias=True))
                covariances[k] = 0.5 * within + 0.5 * pooled
            else:
                covariances[k] = pooled
        self.covariances = self._constrain(covariances, np.ones(self.n_states))

    # ------------------------------------------------------------------------ EM
    def log_likelihoods(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """log p(y_t | z_t = k), (n_steps, K), written to ``out`` if given; 0 for a wholly missing step."""
        out = np.empty((values.shape[0], self.n_states)) if out is None else out
        for rows, observed in missingness_patterns(values):
            if rows is None:
                return gaussian_log_density(values, self.means, self.covariances, out)
            if not observed.any():
                out[rows] = 0.0
                continue
            points = np.ascontiguousarray(values[np.ix_(rows, observed)])
            cov = np.ascontiguousarray(self.covariances[:, observed][:, :, observed])
            out[rows] = gaussian_log_density(points, np.ascontiguousarray(self.means[:, observed]), cov)
        return out

    def statistics(self, values: np.ndarray, posteriors: np.ndarray) -> Statistics:
        k_states, d = self.n_states, values.shape[1]
        weights = np.zeros(k_states)
        sums = np.zeros((k_states, d))
        outer = np.zeros((k_states, d, d))
        for rows, observed in missingness_patterns(values):
            if not observed.any():
                continue
            x = values[rows] if rows is not None else values
            post = posteriors[rows] if rows is not None else posteriors
            if observed.all():
                totals, weighted, products = weighted_moments(x, post)
                weights += totals
                sums += weighted
                outer += products
                continue
            missing = ~observed
            for k in range(k_states):
                g = post[:, k]
                filled, conditional = self._impute(x, k, observed, missing)
                weights[k] += g.sum()
                sums[k] += g @ filled
                outer[k] += (filled * g[:, None]).T @ filled
                if conditional is not None:
                    outer[k][np.ix_(missing, missing)] += g.sum() * conditional
        return Statistics(weights=weights, sums=sums, outer=outer)

    def _impute(
        self, x: np.ndarray, k: int, observed: np.ndarray, missing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows with missing dimensions replaced by E[y_m | y_o, z=k], and Cov[y_m | y_o, z=k]."""
        if not missing.any():
            return x, None
        mean, cov = self.means[k], self.covariances[k]
        cov_oo = cov[np.ix_(observed, observed)]
        cov_om = cov[np.ix_(observed, missing)]
        gain = np.linalg.solve(cov_oo, cov_om)  # (o, m)
        filled = x.copy()
        filled[:, missing] = mean[missing] + (x[:, observed] - mean[observed]) @ gain
        conditional = cov[np.ix_(missing, missing)] - cov_om.T @ gain
        return filled, conditional

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        weights, sums, outer = stats["weights"], stats["sums"], stats["outer"]
        active = weights > 1e-12
        means = self.means
        if "means" not in fixed:
            means = np.where(active[:, None], sums / np.where(active, weights, 1.0)[:, None], self.means)
        if "covariances" not in fixed:
            cross = sums[:, :, None] * means[:, None, :]
            scatter = (
                outer
                - cross
                - np.swapaxes(cross, 1, 2)
                + weights[:, None, None] * (means[:, :, None] * means[:, None, :])
            )
            self.covariances = self._constrain(scatter, weights, previous=self.covariances)
        self.means = means

    def _constrain(self, scatter: np.ndarray, weights: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
        """Covariances of the configured type from weighted scatter matrices (MAP with reg_covar)."""
        d = scatter.shape[-1]
        eye = np.eye(d)
        active = weights > 1e-12
        safe = np.where(active, weights, 1.0)[:, None, None]
        if self.covariance == "full":
            cov = (scatter + self.reg_covar * eye) / safe
        elif self.covariance == "diag":
            cov = (np.einsum("kii->ki", scatter)[:, :, None] * eye + self.reg_covar * eye) / safe
        elif self.covariance == "spherical":
            variance = (np.einsum("kii->k", scatter) + d * self.reg_covar) / (d * safe[:, 0, 0])
            cov = variance[:, None, None] * eye
        else:  # tied within groups
            cov = np.empty_like(scatter)
            for group in np.unique(self.groups):
                members = self.groups == group
                total = weights[members].sum()
                pooled = (scatter[members].sum(axis=0) + self.reg_covar * eye) / max(total, 1e-300)
                cov[members] = pooled
            active = np.array([weights[self.groups == g].sum() > 1e-12 for g in self.groups])
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        if previous is not None:
            cov = np.where(active[:, None, None], cov, previous)
        self._check_collapse(cov)
        return cov

    def _check_collapse(self, covariances: np.ndarray) -> None:
        """A clear error, before any kernel divides by it, when a mode's covariance is singular:
        with reg_covar = 0, a mode whose points coincide (or lie on a line, a plane) has none."""
        try:
            if np.all(np.diagonal(np.linalg.cholesky(covariances), axis1=1, axis2=2) > 0):
                return
        except np.linalg.LinAlgError:
            pass
        for k, matrix in enumerate(covariances):  # which one
            try:
                if np.all(np.diagonal(np.linalg.cholesky(matrix)) > 0):
                    continue
            except np.linalg.LinAlgError:
                pass
            flat = np.flatnonzero(np.diagonal(matrix) <= 0)
            where = f"onto one point in feature {int(flat[0])}" if flat.size else "onto a subspace"
            raise ValueError(
                f"the covariance of mode {k} collapsed {where} (its data have no spread there): "
                f"raise reg_covar (now {self.reg_covar:g}), or check the data for constant stretches"
            )

    def log_prior(self) -> float:
        if self.reg_covar == 0.0:
            return 0.0
        matrices = self.covariances
        if self.covariance == "tied":
            matrices = matrices[np.unique(self.groups, return_index=True)[1]]
        return float(-0.5 * self.reg_covar * np.trace(np.linalg.inv(matrices), axis1=1, axis2=2).sum())

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        k, d = self.n_states, self.n_features
        per_matrix = {"full": d * (d + 1) // 2, "diag": d, "spherical": 1, "tied": d * (d + 1) // 2}
        n_matrices = len(np.unique(self.groups)) if self.covariance == "tied" else k
        count = 0 if "means" in fixed else k * d
        return count + (0 if "covariances" in fixed else n_matrices * per_matrix[self.covariance])

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        chol = np.linalg.cholesky(self.covariances)
        noise = rng.standard_normal((len(states), self.n_features))
        return self.means[states] + np.einsum("nij,nj->ni", chol[states], noise)


def _complete_rows(values: np.ndarray) -> np.ndarray:
    """Fully observed rows; if there are too few, rows with NaN filled by column means."""
    complete = values[~np.isnan(values).any(axis=1)]
    if len(complete) >= max(10, 2 * values.shape[1]):
        return complete
    observed = values[~np.isnan(values).all(axis=1)]
    if len(observed) == 0:
        raise ValueError("no observed values to initialise from (all values are missing)")
    column_means = np.nanmean(observed, axis=0)
    return np.where(np.isnan(observed), column_means, observed)
