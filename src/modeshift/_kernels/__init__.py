"""numba-compiled hot loops: pure functions on arrays, no classes, no validation."""

from modeshift._kernels.gaussian import gaussian_log_density, inverse_cholesky, regression_log_density, weighted_moments
from modeshift._kernels.hmm import (
    forward_backward,
    forward_backward_varying,
    forward_filter,
    log_likelihood,
    sample_chain,
    sample_posterior_paths,
    viterbi,
)
from modeshift._kernels.kalman import kalman_filter, rts_smoother, sample_states
from modeshift._kernels.lds_score import log_likelihood_and_score
from modeshift._kernels.resampling import (
    effective_sample_size,
    multinomial,
    normalise_log_weights,
    particle_moments,
    resample,
    residual,
    stratified,
    systematic,
)
from modeshift._kernels.tridiagonal import (
    block_cholesky,
    block_log_det,
    block_marginals,
    block_solve,
    sample_block,
    solve_block_tridiagonal,
)
from modeshift._kernels.ziggurat import standard_normal

__all__ = [
    "forward_backward",
    "forward_backward_varying",
    "forward_filter",
    "gaussian_log_density",
    "inverse_cholesky",
    "log_likelihood",
    "sample_chain",
    "sample_posterior_paths",
    "viterbi",
    "regression_log_density",
    "weighted_moments",
    "kalman_filter",
    "log_likelihood_and_score",
    "rts_smoother",
    "sample_states",
    "effective_sample_size",
    "multinomial",
    "normalise_log_weights",
    "particle_moments",
    "resample",
    "residual",
    "stratified",
    "systematic",
    "block_cholesky",
    "block_log_det",
    "block_marginals",
    "block_solve",
    "sample_block",
    "solve_block_tridiagonal",
    "standard_normal",
]
