"""Fitting from several Python threads at once is safe whatever threading layer numba finds
(modeshift._kernels.threads): under numba's non-thread-safe workqueue layer the parallel kernels
are serialised, where without that the process aborts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np

from modeshift._kernels.threads import parallel

SCRIPT = textwrap.dedent(
    """
    import threading, warnings
    import numba, numpy as np
    from modeshift import HMM

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    X, lengths = rng.normal(size=(1600, 2)), [200] * 8  # several sequences: the parallel loops run
    reference = HMM(2, n_iter=3, random_state=1).fit(X, lengths).score(X, lengths)
    scores, errors = [], []

    def work():
        try:
            for _ in range(4):
                scores.append(HMM(2, n_iter=3, random_state=1).fit(X, lengths).score(X, lengths))
        except Exception as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert numba.threading_layer() == "workqueue", numba.threading_layer()
    assert not errors, errors
    assert len(scores) == 16 and all(score == reference for score in scores), scores
    print("ok")
    """
)


def test_fits_from_several_threads_under_the_workqueue_layer_neither_crash_nor_differ():
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@parallel(tasks=lambda n, out: n)
def _fill(n, out):
    for i in numba.prange(out.shape[0]):
        out[i] = i


def test_a_kernel_with_one_task_runs_serial_and_with_many_on_the_team():
    """One task: the serial compile (no thread team woken); many: the parallel one."""
    out = np.zeros(64)
    _fill(1, out)
    assert _fill.serial.signatures and not _fill.compiled.signatures
    _fill(10**6, out)
    assert _fill.compiled.signatures
    np.testing.assert_array_equal(out, np.arange(64))
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # put back after the call
