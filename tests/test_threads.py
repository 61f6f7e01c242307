"""Fitting from several Python threads at once is safe whatever threading layer numba finds
(modeshift._kernels.threads): under numba's non-thread-safe workqueue layer the parallel kernels
are serialised, where without that the process aborts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import pytest

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


@parallel(tasks=lambda n: n)
def _threads_inside(n):
    return numba.get_num_threads()


@pytest.mark.filterwarnings("ignore::numba.NumbaWarning")  # no loop to parallelise; not cached
def test_a_kernel_runs_on_no_more_threads_than_its_tasks():
    everyone = numba.get_num_threads()
    assert _threads_inside(1) == 1
    assert _threads_inside(10**6) == everyone
    assert numba.get_num_threads() == everyone  # put back after the call
