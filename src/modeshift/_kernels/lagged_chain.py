"""Forward-backward on a lagged chain: the states (S_t, S_t-1, ..., S_t-p) of a K-state Markov chain.

A Markov-switching autoregression of order p sees p + 1 regimes at each step, so its
recursions run on the expanded chain of E = K^(p+1) states e = sum_j S_t-j K^(p-j)
(S_t the most significant digit). That chain is sparse: state e moves only to the K
states f = j K^p + e // K (j the new regime), with probability P_t[e // K^p, j], so

    predicted(f) = sum_m alpha_t-1(r K + m) P_t[(r K + m) // K^p, f // K^p],   r = f mod K^p,
    beta_t-1(e) = sum_j P_t[e // K^p, j] b_t(j K^p + e // K) beta_t(j K^p + e // K) / c_t,

a step costs E K operations instead of the E^2 of the dense (E, E) matrix, which is
never built. What an M-step needs of the pairs is their sum over the expanded states,
the expected regime moves into each step, xi_t[i, j] = p(S_t-1 = i, S_t = j | y).
(For p = 0 the chain is the regimes' own, and the formulas are the dense recursion.)

The filter is scaled (alpha_t sums to one, c_t its normaliser); the evidence comes as
``table`` = exp(log-likelihood - ``shifts``), one row per step, the shift added back.

>>> import numpy as np
>>> K, p, T = 2, 1, 4
>>> table, shifts = np.ones((T, K ** (p + 1))), np.zeros(T)
>>> out = forward_backward(table, shifts, np.array([0, T]), np.full((1, 4), 0.25), np.full((1, K, K), 0.5), K, p)
>>> out[0], out[2][1]  # no evidence: probability 1, moves into step 1 uniform
(array([0.]), array([[0.25, 0.25],
       [0.25, 0.25]]))
"""

from __future__ import annotations

import numpy as np

from modeshift._kernels.compile import kernel

__all__ = ["forward_backward"]


@kernel
def forward_backward(
    table: np.ndarray,
    shifts: np.ndarray,
    offsets: np.ndarray,
    initials: np.ndarray,
    matrices: np.ndarray,
    n_states: int,
    order: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothing on the lagged chain of ``n_states`` regimes and ``order`` lags.

    ``table`` (T, E) and ``shifts`` (T,): step t's evidence exp(log p(y_t | e) - shifts[t]);
    ``offsets`` (n_sequences + 1,): sequence s is steps offsets[s]:offsets[s+1];
    ``initials`` (1 or n_sequences, E): p(first expanded state), shared or of each sequence;
    ``matrices`` (1 or T, K, K): the regimes' P_t, entry t moving into step t (unused at starts).

    Returns per-sequence log-likelihoods (n_sequences,) (-inf for an impossible one), the
    posteriors p(e_t | y) (T, E) and the expected regime moves into each step (T, K, K),
    zero at sequence starts.
    """
    n_steps, n_expanded = table.shape
    k = n_states
    newest = k**order
    states = np.arange(n_expanded)
    regime = states // newest  # S_t of expanded state e
    predecessors = (states % newest) * k  # those of f: predecessors[f] + m, m < K
    kept = states // k  # the successors of e: j * newest + kept[e], j < K
    varying = matrices.shape[0] > 1
    filtered = np.zeros((n_steps, n_expanded))
    normalisers = np.zeros(n_steps)
    posteriors = np.zeros((n_steps, n_expanded))
    moves = np.zeros((n_steps, k, k))
    out = np.zeros(offsets.shape[0] - 1)
    backward = np.empty(n_expanded)
    weights = np.empty(n_expanded)
    for s in range(offsets.shape[0] - 1):
        first, last = offsets[s], offsets[s + 1]
        initial = s if initials.shape[0] > 1 else 0
        log_lik = 0.0
        for t in range(first, last):
            if t == first:
                for f in range(n_expanded):
                    filtered[t, f] = initials[initial, f] * table[t, f]
            else:
                matrix = t if varying else 0
                for f in range(n_expanded):
                    value = 0.0
                    for e in range(predecessors[f], predecessors[f] + k):
                        value += filtered[t - 1, e] * matrices[matrix, regime[e], regime[f]]
                    filtered[t, f] = value * table[t, f]
            total = 0.0
            for f in range(n_expanded):
                total += filtered[t, f]
            if not total > 0.0:
                log_lik = -np.inf
                break
            normalisers[t] = total
            for f in range(n_expanded):
                filtered[t, f] /= total
            log_lik += np.log(total) + shifts[t]
        out[s] = log_lik
        if log_lik == -np.inf:
            continue
        backward[:] = 1.0
        for t in range(last - 1, first - 1, -1):
            for e in range(n_expanded):
                posteriors[t, e] = filtered[t, e] * backward[e]
            if t == first:
                break
            matrix = t if varying else 0
            for f in range(n_expanded):
                weights[f] = table[t, f] * backward[f] / normalisers[t]
            for e in range(n_expanded):
                source = regime[e]
                value = 0.0
                for j in range(k):
                    flow = matrices[matrix, source, j] * weights[j * newest + kept[e]]
                    moves[t, source, j] += filtered[t - 1, e] * flow
                    value += flow
                backward[e] = value
    return out, posteriors, moves
