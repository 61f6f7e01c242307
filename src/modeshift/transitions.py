"""How a hidden chain moves between its states: one fixed matrix, or one driven by inputs.

Both blocks give the kernels an initial distribution and a stack of transition
matrices (1 or n_steps, K, K), take expected counts in the E-step, and update their
parameters in the M-step. ``features`` (n_steps, F) are what an input-driven chain
reads at each step; a stationary chain ignores them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import log_softmax, softmax, xlogy

from modeshift import transitions_logit as logit
from modeshift._kernels import sample_chain
from modeshift.chain_analysis import dwell_times, stationary_distribution
from modeshift.data import check_array, check_probabilities
from modeshift.statistics import Stacked, Statistics

__all__ = ["InputDriven", "Stationary", "draw_rows", "normalise_rows", "stationary_start_transitions"]


class Stationary:
    """An initial distribution and one transition matrix for all time steps.

    The M-step is the posterior mode under independent Dirichlet priors on the
    initial distribution and on each row of the transition matrix:
    ``concentration`` is added to every count minus one, and ``stickiness`` is
    added to the diagonal counts (a sticky prior that favours staying in a state).
    With the defaults (1 and 0) the M-step is plain maximum likelihood.

    With ``stationary_start`` the first state follows the stationary distribution
    pi(P) of the transition matrix (the chain is in equilibrium when observed):
    ``initial_probs`` is no parameter of its own but always pi(P), and the M-step
    maximises sum_ij n_ij log p_ij + sum_k g_k log pi_k(P) (n the transition counts
    with the prior's pseudo-counts, g the expected first-state counts) jointly. It
    starts from the better of the current matrix and the counts-only maximiser
    n_ij / n_i (close to the optimum: g weighs one step per sequence), then runs
    BFGS on the rows' logits (P_i = softmax(theta_i)) with the analytic gradient
    from d pi = pi dP Z, Z = (I - P + 1 1')^-1, and keeps the result only if the
    objective rose, so EM stays monotone.

    Parameters
    ----------
    n_states : int
    concentration : float
        Dirichlet concentration of every entry (>= 1 keeps the mode well defined);
        with ``stationary_start`` only the rows of the transition matrix have the prior.
    stickiness : float
        Extra pseudo-count on the diagonal of the transition matrix.
    stationary_start : bool
        Tie the initial distribution to the stationary distribution of the transition matrix.
    """

    #: model attribute -> attribute of this object (a stationary start lists ``transmat_`` first,
    #: so that restoring both sets the matrix, and with it the start, before checking the start)
    parameters = {"startprob_": "initial_probs", "transmat_": "transition_matrix"}
    #: whether the E-step must keep pair posteriors per step
    varying = False

    def __init__(
        self, n_states: int, concentration: float = 1.0, stickiness: float = 0.0, stationary_start: bool = False
    ):
        if concentration < 1.0 or stickiness < 0.0:
            raise ValueError("concentration must be >= 1 and stickiness >= 0")
        self.n_states = n_states
        self.concentration = concentration
        self.stickiness = stickiness
        self.stationary_start = stationary_start
        if stationary_start:
            self.parameters = {"transmat_": "transition_matrix", "startprob_": "initial_probs"}
        self.initial_probs: np.ndarray | None = None
        self.transition_matrix: np.ndarray | None = None

    # ----------------------------------------------------------------- parameters
    def set(self, name: str, value: np.ndarray) -> None:
        """Set ``initial_probs`` or ``transition_matrix`` after checking it (with a stationary
        start, the matrix sets the start too, and a start must agree with the matrix)."""
        k = self.n_states
        label, shape = {"initial_probs": ("startprob_", (k,)), "transition_matrix": ("transmat_", (k, k))}[name]
        value = check_probabilities(label, value, shape)
        if self.stationary_start and name == "transition_matrix":
            self.initial_probs = stationary_distribution(value)
        elif self.stationary_start and self.transition_matrix is not None:
            if not np.allclose(value, self.initial_probs, rtol=0.0, atol=1e-8):
                raise ValueError(
                    "with a stationary start, startprob_ is the stationary distribution of transmat_: "
                    f"{np.round(self.initial_probs, 6)}; set transmat_ instead"
                )
            return
        setattr(self, name, value)

    def initialize(self, rng: np.random.Generator) -> None:
        """Uniform start (or the stationary one); transition rows near 'stay', randomised so restarts differ."""
        k = self.n_states
        noise = rng.dirichlet(np.ones(k), size=k)
        self.transition_matrix = 0.5 * np.eye(k) + 0.5 * noise if k > 1 else np.ones((1, 1))
        P = self.transition_matrix
        self.initial_probs = stationary_distribution(P) if self.stationary_start else np.full(k, 1.0 / k)

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        k = self.n_states
        free_start = "initial_probs" not in fixed and not self.stationary_start
        return (k - 1 if free_start else 0) + (0 if "transition_matrix" in fixed else k * (k - 1))

    def kernel_arrays(self, features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(initial_probs, transition matrices (1, K, K)) as the kernels take them."""
        return self.initial_probs, self.transition_matrix[None]

    def log_kernel_arrays(self, features: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore"):
            return np.log(self.initial_probs), np.log(self.transition_matrix)[None]

    def describe(self) -> dict[str, np.ndarray]:
        """Per-state columns: long-run share of time (from ``initial_probs`` if the chain has several
        closed classes), mean dwell time 1 / (1 - p_kk), switch probabilities."""
        P = self.transition_matrix
        return {
            "occupancy": stationary_distribution(P, self.initial_probs),
            "dwell_time": dwell_times(P),
            **{f"to_{j}": P[:, j] for j in range(len(P))},
        }

    # ------------------------------------------------------------------------ EM
    def statistics(
        self, posteriors: np.ndarray, starts: np.ndarray, pairs: np.ndarray, features: np.ndarray | None = None
    ) -> Statistics:
        """Expected initial-state counts and transition counts (``pairs`` summed over steps)."""
        return Statistics(initial=posteriors[starts].sum(axis=0), transitions=pairs)

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset()) -> None:
        extra = self.concentration - 1.0
        counts = stats["transitions"] + extra + self.stickiness * np.eye(self.n_states)
        if self.stationary_start:
            if "transition_matrix" not in fixed:
                P = stationary_start_transitions(counts, stats["initial"], self.transition_matrix)
                self.set("transition_matrix", P)
            return
        if "initial_probs" not in fixed:
            self.initial_probs = normalise_rows(stats["initial"] + extra, self.initial_probs)
        if "transition_matrix" not in fixed:
            self.transition_matrix = normalise_rows(counts, self.transition_matrix)

    def log_prior(self) -> float:
        """Log density of the Dirichlet priors, up to a constant."""
        extra, total = self.concentration - 1.0, 0.0
        if extra == 0.0 and self.stickiness == 0.0:
            return total
        with np.errstate(divide="ignore"):  # log 0 = -inf under a positive weight: impossible under the prior
            if extra > 0.0:
                total += extra * float(np.log(self.transition_matrix).sum())
                if not self.stationary_start:
                    total += extra * float(np.log(self.initial_probs).sum())
            if self.stickiness > 0.0:
                total += self.stickiness * float(np.log(np.diagonal(self.transition_matrix)).sum())
        return total

    # ------------------------------------------------------------------ sampling
    def sample(self, n_steps: int, rng: np.random.Generator, features: np.ndarray | None = None) -> np.ndarray:
        """One state path of ``n_steps`` steps."""
        return sample_chain(self.initial_probs, self.transition_matrix[None], rng.random(n_steps))


class InputDriven:
    """Transitions that depend on inputs u_t: a multinomial logit (:mod:`~modeshift.transitions_logit`).

    Shared slopes (the default): ``p(z_t = j | z_t-1 = i, u_t) = softmax_j(r_ij + w_j . u_t)``.
    ``biases`` r (K, K) hold the chain at zero input; ``weights`` w (K, F) say how
    each input pushes towards each state, whatever the source. With u_t a switch's physical
    drivers these are the guards of a hybrid automaton: leaving i for j becomes likelier than
    staying where (w_j - w_i) . u + r_ij - r_ii > 0.

    Per source (``per_source=True``): ``p(z_t = j | z_t-1 = i, u_t) proportional to
    exp(B[i, j] . (1, u_t))`` for j < K-1 and to 1 for the reference j = K-1, ``coef`` B
    (K, K-1, 1 + F): column 0 the baseline log-odds, the others a slope per (source,
    destination). These are statsmodels' ``exog_tvtp`` coefficients for the covariates (1, u_t).

    Entry t of the matrices moves z_t-1 to z_t and reads u_t (a sequence's first input moves
    nothing). The M-step maximises the expected log-likelihood plus the L2 prior
    ``-penalty / 2 |coefficients|^2`` from the current values (so EM stays monotone) by Newton:
    the shared form through its per-source coefficients A theta (``penalty`` > 0 makes its
    system positive definite), the per-source one per source regime (``penalty`` >= 0). It
    needs the pair posteriors of every step, which
    batches contribute by stacking (:class:`~modeshift.statistics.Stacked`); over the shards
    of a cluster they stay where their shard lies (:class:`~modeshift.statistics.Kept`) and
    the optimiser reads only sums over them (:data:`~modeshift.transitions_logit.Rows`).
    """

    parameters = {"startprob_": "initial_probs", "input_weights_": "weights", "recurrence_biases_": "biases"}
    varying = True
    #: the moves the chain can make (K, K) bool, per source only (a semi-Markov chain's switches
    #: never stay: :mod:`~modeshift.models.hsmm`); None: every move
    allowed: np.ndarray | None = None

    def __init__(
        self,
        n_states: int,
        n_features: int,
        concentration: float = 1.0,
        penalty: float = 1e-2,
        per_source: bool = False,
    ):
        if concentration < 1.0 or penalty < 0.0 or (penalty == 0.0 and not per_source):
            raise ValueError("concentration must be >= 1 and the transition penalty > 0 (>= 0 with per-source slopes)")
        self.n_states = n_states
        self.n_features = n_features
        self.concentration = concentration
        self.penalty = penalty
        self.per_source = per_source
        if per_source:
            self.parameters = {"startprob_": "initial_probs", "transition_coef_": "coef"}
        self.initial_probs: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.biases: np.ndarray | None = None
        self.coef: np.ndarray | None = None

    def set(self, name: str, value: np.ndarray) -> None:
        k, f = self.n_states, self.n_features
        if name == "initial_probs":
            self.initial_probs = check_probabilities("startprob_", value, (k,))
        elif name == "weights":
            self.weights = check_array("input_weights_", value, (k, f))
        elif name == "biases":
            self.biases = check_array("recurrence_biases_", value, (k, k))
        else:
            self.coef = check_array("transition_coef_", value, (k, k - 1, 1 + f))

    def initialize(self, rng: np.random.Generator) -> None:
        """As :class:`Stationary` at zero input; inputs start without effect."""
        start = Stationary(self.n_states)
        start.initialize(rng)
        self.initial_probs = start.initial_probs
        log_matrix = np.log(start.transition_matrix)
        if self.per_source:
            self.coef = np.zeros((self.n_states, self.n_states - 1, 1 + self.n_features))
            self.coef[:, :, 0] = log_matrix[:, :-1] - log_matrix[:, -1:]
        else:
            self.biases = log_matrix
            self.weights = np.zeros((self.n_states, self.n_features))

    def n_parameters(self, fixed: frozenset[str] = frozenset()) -> int:
        k, f = self.n_states, self.n_features
        count = 0 if "initial_probs" in fixed else k - 1
        if self.per_source:
            return count + (0 if "coef" in fixed else k * (k - 1) * (1 + f))
        count += 0 if "biases" in fixed else k * (k - 1)  # a common shift of a row changes nothing
        return count + (0 if "weights" in fixed else (k - 1) * f)

    def _logits(self, features: np.ndarray) -> np.ndarray:
        """(n_steps, K, K) logits of the moves into each step."""
        if self.per_source:
            return logit.per_source_logits(self.coef, _covariates(features), self.allowed)
        return logit.shared_logits(self.biases, self.weights, features)

    def kernel_arrays(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(initial_probs, transition matrices (n_steps, K, K)); entry t moves z_t-1 to z_t."""
        return self.initial_probs, softmax(self._logits(features), axis=2)

    def log_kernel_arrays(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore"):
            return np.log(self.initial_probs), log_softmax(self._logits(features), axis=2)

    def describe(self) -> dict[str, np.ndarray]:
        """Per-state columns: switch probabilities at zero input and the input slopes
        (per source: ``to_{j}.input{c}``, the slope of input c in the log-odds of j against K-1)."""
        k = self.n_states
        if self.per_source:
            P = softmax(np.c_[self.coef[:, :, 0], np.zeros(k)], axis=1)
            slopes = {f"to_{j}.input{c}": self.coef[:, j, 1 + c] for j in range(k - 1) for c in range(self.n_features)}
            return {**{f"to_{j}_at_zero_input": P[:, j] for j in range(k)}, **slopes}
        P = softmax(self.biases, axis=1)
        return {**{f"to_{j}_at_zero_input": P[:, j] for j in range(k)}, "input_weights": list(self.weights)}

    # ------------------------------------------------------------------------ EM
    def statistics(
        self, posteriors: np.ndarray, starts: np.ndarray, pairs: np.ndarray, features: np.ndarray
    ) -> Statistics:
        """Initial counts, and the pair posteriors (n_steps, K, K) and inputs of every step
        that has a predecessor."""
        rows = np.ones(len(pairs), dtype=bool)
        rows[starts] = False
        return Statistics(
            initial=posteriors[starts].sum(axis=0), pairs=Stacked(pairs[rows]), features=Stacked(features[rows])
        )

    def m_step(self, stats: Statistics, fixed: frozenset[str] = frozenset(), max_iter: int = 100) -> None:
        extra = self.concentration - 1.0
        if "initial_probs" not in fixed:
            self.initial_probs = normalise_rows(stats["initial"] + extra, self.initial_probs)
        # the rows: Stacked in hand, or Kept on a cluster's shards; both forms read covariates (1, u_t)
        rows = functools.partial(_per_source_rows, stats["pairs"], stats["features"])
        if self.per_source:
            if "coef" not in fixed:
                self.coef = logit.maximise_per_source(rows, self.coef, self.penalty, allowed=self.allowed)
            return
        free = ("biases" not in fixed, "weights" not in fixed)
        if any(free):
            self.biases, self.weights = logit.fit_shared(rows, self.biases, self.weights, self.penalty, free, max_iter)

    def log_prior(self) -> float:
        extra = self.concentration - 1.0
        if self.per_source:
            total = -0.5 * self.penalty * np.sum(self.coef**2)
        else:
            total = -0.5 * self.penalty * (np.sum(self.biases**2) + np.sum(self.weights**2))
        if extra > 0:
            with np.errstate(divide="ignore"):
                total += extra * np.sum(np.log(self.initial_probs))
        return float(total)

    def sample(self, n_steps: int, rng: np.random.Generator, features: np.ndarray | None = None) -> np.ndarray:
        """One state path of ``n_steps`` steps driven by ``features`` (n_steps, F)."""
        if features is None or len(features) != n_steps:
            raise ValueError(f"an input-driven chain needs inputs for each of the {n_steps} steps")
        return sample_chain(self.initial_probs, self.kernel_arrays(features)[1], rng.random(n_steps))


def _per_source_rows(pairs: Any, features: Any, function: Callable[..., Any]) -> Any:
    """The :data:`~modeshift.transitions_logit.Rows` of both forms: the covariates (1, u_t)."""
    return pairs.terms(functools.partial(_with_constant, function), features)


def _with_constant(function: Callable[..., Any], pairs: np.ndarray, features: np.ndarray) -> Any:
    return function(pairs, _covariates(features))


def _covariates(features: np.ndarray) -> np.ndarray:
    """(n_steps, 1 + F): the per-source form's covariates, a constant and the inputs."""
    return np.c_[np.ones(len(features)), features]


def stationary_start_transitions(counts: np.ndarray, initial: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The transition matrix that maximises sum_ij n_ij log p_ij + sum_k g_k log pi_k(P), pi(P) the
    stationary law (see :class:`Stationary`), from the better of ``previous`` and n_ij / n_i.

    Fisher scoring on each row's logits: the counts' term has the curvature m_i (diag p_i - p_i p_i')
    (m_i = n_i + sum g, the start's weight spread on every row), whose inverse maps the gradient
    g_ij to the step g_ij / (m_i p_ij); a step is halved until the objective rises, so the M-step
    never lowers it (a generalised EM step where it stops early)."""
    k = len(counts)
    ones = np.ones((k, k))
    weight = counts.sum(axis=1) + initial.sum()

    def evaluate(P: np.ndarray) -> tuple[float, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            try:  # I - P + 1 1' is singular when P has several closed classes: no unique pi(P)
                Z = np.linalg.inv(np.eye(k) - P + ones)
            except np.linalg.LinAlgError:
                return -np.inf, np.zeros((k, k))
            pi = Z.sum(axis=0)  # pi = 1' Z
            value = float(xlogy(counts, P).sum() + xlogy(initial, pi).sum())
            if not (np.isfinite(value) and (pi > 0).all()):
                return -np.inf, np.zeros((k, k))
            # d pi_k / d p_ij = pi_i Z_jk, so d (g . log pi) / d p_ij = pi_i (Z g/pi)_j; then to the logits
            G = np.outer(pi, Z @ (initial / pi))
            gradient = counts - counts.sum(axis=1, keepdims=True) * P + P * (G - (G * P).sum(axis=1, keepdims=True))
        return value, gradient

    P = max((previous, normalise_rows(counts, previous)), key=lambda matrix: evaluate(matrix)[0])
    value, gradient = evaluate(P)
    if not np.isfinite(value):
        return P
    for _ in range(100):
        if np.abs(gradient).max() <= 1e-10 * weight.sum():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            logits = np.log(P)
            direction = np.where(P > 0, gradient / (weight[:, None] * P), 0.0)
        for step in 0.5 ** np.arange(40):
            candidate = softmax(logits + step * direction, axis=1)
            candidate_value, candidate_gradient = evaluate(candidate)
            if candidate_value > value:
                break
        else:
            break  # no step raises it: a maximum, to rounding
        gain = candidate_value - value
        P, value, gradient = candidate, candidate_value, candidate_gradient
        if gain <= 1e-14 * abs(value):
            break
    return P


def normalise_rows(counts: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Rows (the last axis) of non-negative counts made into probabilities; a row with no
    counts keeps its ``previous`` value (an M-step with no evidence leaves it alone)."""
    totals = counts.sum(axis=-1, keepdims=True)
    if previous is None:
        return counts / totals
    with np.errstate(invalid="ignore", divide="ignore"):
        probs = counts / totals
    return np.where(totals > 0, probs, previous)


def draw_rows(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One state per row of (n, K) non-negative probabilities (unnormalised is fine), by inverting
    the cumulative sums with one uniform each. A state of probability 0 is never drawn: a uniform
    that rounding carries to the end of a row draws the row's last state of positive probability.

    >>> draw_rows(np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]), np.random.default_rng(0)).tolist()
    [1, 0]
    """
    cumulative = np.cumsum(probabilities, axis=1)
    totals = cumulative[:, -1:]
    drawn = (cumulative <= rng.random((len(cumulative), 1)) * totals).sum(axis=1)
    return np.minimum(drawn, (cumulative < totals).sum(axis=1))
