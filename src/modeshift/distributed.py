"""Fit, decode and score models over data on a Dask cluster (the ``modeshift[distributed]`` extra).

The E-step of an EM fit is a sum over sequences: each shard of whole sequences yields its
expected sufficient statistics under the current parameters, the statistics of all shards
add up (:func:`~modeshift.statistics.combine`), and the M-step needs only their sum. So a
fit over data too large for one process runs as

1. every partition of a Dask DataFrame (long format: id, time, values), of a Parquet
   dataset or of a Dask bag of sequences is read into :class:`~modeshift.data.Sequences`
   once, on the worker that holds it, and kept there (checked and validated as ``fit``
   checks data in memory; the same pass finds partitions that split a sequence, which are
   refused, or shuffled by id when a time column orders the rows: :func:`_first_pass`);
2. each iteration, one task per worker carries the model (its parameters: kilobytes)
   and runs the E-step of the partitions kept there, one after another, adding their
   statistics in partition order; the workers' sums are added on the cluster in a fixed
   binary tree (worker 0 + 1, 2 + 3, ...), so that the result does not depend on which
   worker finished first;
3. the client receives only the total (of the size of the parameters) and runs the M-step.

The same estimator objects and the same EM driver (:mod:`modeshift.models.em`) do the
work, so a fit from the same starting parameters equals the in-memory fit up to the
round-off of the summation order (1e-10 relative), for any partitioning. Starting values
come from a sample of every partition (:meth:`Shards.sample`: all the data up to
:data:`SAMPLE_STEPS` steps; a sequence of each when every starting parameter is given).
The statistics of a partition are a pure function of the partition and the parameters
(and of its earlier sweeps, for a workspace carried from one to the next), and every task's
inputs can be computed again: a worker lost mid-fit costs Dask a recomputation of its
partitions and tasks, not the fit, nor a digit of its result.
Restarts and the candidates of ``n_states="auto"`` run at once (client threads, their
E-steps on the cluster), picked as in memory.

Models fit this way have the :class:`~modeshift.models.capabilities.ShardableFit`
capability: ``HMM`` (every emission), ``ARHMM``, ``HSMM`` (its ``max_duration_`` agreed over
all partitions first), ``LinearGaussianSSM`` (whose quasi-Newton polish sums the exact
log-likelihood and its gradient over the partitions the same way), ``SwitchingLDS`` (each
partition's variational posterior kept on its worker from one sweep to the next),
``NonlinearSwitchingLDS`` (likewise its Laplace posterior; each sequence's mode search runs on
its own, so the fit does not depend on how the sequences are cut),
``SymbolHMM``, ``MarkovChain`` and ``VariableOrderChain`` (whose vocabulary is read from all
partitions first, merged in partition order: symbols in order of first appearance, as in
memory for the partitions concatenated), ``MarkovChainMixture`` and the Markov-switching
``MarkovRegression`` and ``MarkovAutoregression`` (their variances, ECM statistics and the
polish's log-likelihood and gradient summed over the partitions; no per-step arrays on the
client). Input-driven (time-varying) transitions fit too: the per-step rows of their logistic
regression stay on the workers (:class:`~modeshift.statistics.Kept`, ``keeps_rows`` in
:mod:`modeshift.models.em`) and its optimiser reads sums over them, one pass per evaluation
(a recurrent ``SwitchingLDS`` still brings its guards' rows to the client: data-sized).

A fit, then decoding and scoring over the same frame::

    import dask.dataframe as dd
    from distributed import Client
    from modeshift import HMM
    client = Client()                                   # a local cluster, or Client("tcp://host:8786")
    frame = dd.read_parquet("sensors/")                 # columns id, time, x, y
    model = HMM(3, random_state=0).fit(frame, time_column="time")   # dispatches here
    states = model.predict(frame, time_column="time")   # a Dask DataFrame: the rows and their mode
    total = model.score(frame, time_column="time").compute()

``fit(..., client=client)`` names the client (else the current one is used), and a path
to a Parquet dataset with ``client=`` reads it (``HMM(3).fit("sensors/", client=client)``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections import ChainMap
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from modeshift._kernels.threads import threads_for
from modeshift.data import Sequences, as_sequences
from modeshift.models import em, selection
from modeshift.models.base import set_collection_handler
from modeshift.models.capabilities import (
    BoundScorer,
    IterativeFit,
    ModeDecoder,
    Scorer,
    Segmenter,
    ShardableFit,
    objective,
)
from modeshift.statistics import combine

__all__ = [
    "Shards",
    "fit",
    "fit_dataset",
    "predict",
    "predict_proba",
    "score",
    "score_dataset",
    "segment",
    "segment_dataset",
]


# ------------------------------------------------------------------------ fitting
def fit(model: Any, data: Any, *, client: Any = None, persist: bool = True, **columns: Any) -> Any:
    """Fit ``model`` by EM over ``data`` on a Dask cluster; returns the model (see the module docstring).

    ``data``: a Dask DataFrame in long format, a path to a Parquet dataset or a Dask bag
    of sequences (arrays); ``columns`` name a frame's columns as for ``fit`` in memory
    (``id_column``, ``time_column``, ``columns``, ``input_columns``). ``client``: a
    ``distributed.Client`` (default: the current one). ``persist``: keep every partition
    on its worker, read once (the workers' memory holds the data); False reads each
    partition again for every pass over the data, so a worker's memory is bounded by the
    partitions it works on at once, whatever the size of the data (one read per iteration).
    """
    return _fit(model, data, _client(client), persist, columns)[0]


def _fit(model: Any, data: Any, client: Any, persist: bool, columns: dict[str, Any]) -> tuple[Any, Shards]:
    """:func:`fit`, and the shards it read (still on the workers, for what comes after the fit)."""
    if getattr(model, "reads_times", False):
        raise TypeError(
            f"{type(model).__name__} cannot be fit over a Dask cluster: its M-step reads the posterior at every "
            "gap between time stamps, not statistics that add up over shards; fit it in memory"
        )
    if not isinstance(model, ShardableFit):
        raise TypeError(
            f"{type(model).__name__} cannot be fit over a Dask cluster: only a fit by EM whose statistics add "
            "up over shards of the data can (HMM, ARHMM, HSMM, LinearGaussianSSM, SwitchingLDS, "
            "NonlinearSwitchingLDS, SymbolHMM, "
            "MarkovChain, VariableOrderChain, MarkovChainMixture, MarkovRegression, MarkovAutoregression); "
            "fit it in memory (docs/distributed.md says why each other model cannot)"
        )
    auto = getattr(model, "n_states", None) == "auto"
    model._start_fit()
    reader = type(model)(**{**model.get_params(), "n_states": 1}) if auto else model  # reads as every candidate
    source = _source(data, columns)
    if hasattr(model, "_em_constants"):  # e.g. a vocabulary: read from all the data first (so by every candidate)
        constants, source = _constants(model, source, client, columns)
        model._em_set_constants(constants)
        reader._em_set_constants(constants)  # the model itself, unless n_states="auto"
    shards = Shards.of(reader, source, client, columns, persist)
    sample = shards.sample(1 if _starts_given(model) else None)
    if auto:
        with selection.elsewhere(_Candidates(shards, sample)):
            return model._fit_auto(sample), shards
    return model._fit_em(sample, over=shards), shards


def _starts_given(model: Any) -> bool:
    """Whether EM starts from parameters set before the fit (by hand, or learned: ``warm_start``)
    and nothing else: one start, every parameter set. Then the sample only checks the data
    against the model and carries their schema (a sequence of each partition is enough)."""
    if getattr(model, "n_states", None) == "auto" or getattr(model, "n_restarts", 1) != 1:
        return False
    names = getattr(model, "parameter_names", ())
    return bool(names) and all(getattr(model, name, None) is not None for name in names)


class _Candidates:
    """The candidates of ``n_states="auto"`` fitted at once (a thread each on the client, their
    E-steps on the cluster) over the same shards, and scored there (:class:`selection.Elsewhere`)."""

    def __init__(self, shards: Shards, sample: Sequences):
        self.shards, self.sample = shards, sample

    def fit_all(self, models: list[Any]) -> list[Any]:
        with ThreadPoolExecutor(len(models)) as pool:
            return list(pool.map(self._fit, models))

    def _fit(self, model: Any) -> Any:
        model._start_fit()
        return model._fit_em(self.sample, over=self.shards)

    def criteria(self, model: Any) -> dict[str, Any]:
        """The row of :func:`selection.select_n_states`, with the objective and the number of
        observations summed over the shards (the criteria as the models define them)."""
        value, n_observations = self.shards(_measure_terms, model)
        k = model.n_parameters
        return {
            "n_states": model._k,
            _measure_name(model): value,
            "n_parameters": k,
            "aic": -2.0 * value + 2.0 * k,
            "bic": -2.0 * value + k * np.log(n_observations),
        }

    def occupancy(self, model: Any) -> np.ndarray:
        """The mean posterior probability of each mode over the steps of all the shards (pruning)."""
        total, steps = self.shards(selection.occupancy_terms, model)
        return total / steps


def _measure_name(model: Any) -> str:
    """What :func:`_measure_terms` sums: "elbo" where the objective is a bound, else "log_likelihood"."""
    return "elbo" if objective(model) == "ELBO" else "log_likelihood"


def _measure_terms(model: Any, shard: Sequences) -> tuple[float, float]:
    """One shard's part of the model's measure of fit (its ELBO after inference, or the exact
    log-likelihood, from the E-step, which reads the shard as EM does) and of its number of
    observations."""
    if hasattr(model, "_selection_terms"):  # the model's own (its score is not EM's objective)
        return model._selection_terms(shard)
    value = model.elbo(shard) if objective(model) == "ELBO" else em._shard_e_step(model, shard)[0]
    steps = model._n_observations(shard) if hasattr(model, "_n_observations") else shard.n_steps
    return float(value), float(steps)


def fit_dataset(
    model: Any,
    path: str | PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    time_column: str | None = None,
) -> dict[str, Any]:
    """Fit ``model`` to a Parquet dataset (a directory or file) or CSV file(s) on the cluster at
    ``scheduler`` (``tcp://host:8786``), or on a local cluster of ``workers`` processes; returns
    what ``modeshift fit --scheduler/--workers`` prints: the number of partitions, the
    measure of fit of the fitted model (its log-likelihood, or its ELBO where its objective is a
    bound, as ``modeshift fit`` in memory prints), and ``converged`` and ``n_iter`` for a fit by
    iterations (as ``modeshift fit`` in memory prints them). The measure is
    summed over the partitions the fit kept on the workers (not read again), but for a chain of
    symbols (MarkovChain, VariableOrderChain, MarkovChainMixture), whose kept partitions are coded
    for counting, not as ``score`` reads data: those are read again, the partitions the fit found
    to hold whole sequences (a SymbolHMM scores its coded partitions itself: ``_selection_terms``)."""
    frame = _dataset(path)
    named = _named(columns, id_column, time_column or "auto")
    with _cluster(scheduler, workers) as client:
        shards = _fit(model, frame, client, True, named)[1]
        summary: dict[str, Any] = {"model": type(model).__name__, "partitions": frame.npartitions}
        if hasattr(model, "_em_constants") and not hasattr(model, "_selection_terms") and isinstance(model, Scorer):
            summary["log_likelihood"] = float(_scored(model, shards.source, {}).compute())  # known whole: no check
        elif isinstance(model, (Scorer, BoundScorer)):  # the fitted model over the partitions kept on the workers
            summary[_measure_name(model)] = shards(_measure_terms, model)[0]
    if isinstance(model, IterativeFit):  # a chain of symbols is counted, not iterated: it has neither
        summary.update(converged=model.converged_, n_iter=model.n_iter_)
    return summary


def score_dataset(
    model: Scorer,
    path: str | PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    time_column: str | None = None,
) -> dict[str, Any]:
    """log p(data) of a Parquet dataset or CSV file(s), summed on a cluster (as :func:`fit_dataset`
    runs one): what ``modeshift score --scheduler/--workers`` prints. A fitted model reads the
    data by its schema unless columns are named."""
    frame = _dataset(path)
    with _cluster(scheduler, workers):
        total = float(score(model, frame, **_named(columns, id_column, time_column)).compute())
    return {"model": type(model).__name__, "partitions": frame.npartitions, "log_likelihood": total}


def segment_dataset(
    model: Segmenter,
    path: str | PathLike[str],
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    time_column: str | None = None,
) -> pd.DataFrame:
    """The runs of one mode (:func:`segment`) of a Parquet dataset or CSV file(s), found on a
    cluster and brought to the client (one row per run): what ``modeshift segment
    --scheduler/--workers`` writes."""
    frame = _dataset(path)
    with _cluster(scheduler, workers):
        return segment(model, frame, **_named(columns, id_column, time_column)).compute().reset_index(drop=True)


def _dataset(path: str | PathLike[str]) -> Any:
    """A Dask DataFrame of a Parquet dataset (a directory or file) or CSV file(s)."""
    import dask.dataframe as dd

    text = str(path)
    return dd.read_csv(text) if text.endswith((".csv", ".csv.gz")) else dd.read_parquet(text)


def _named(columns: Sequence[str] | None, id_column: str | None, time_column: str | None) -> dict[str, Any]:
    """The column keywords given (none: a fitted model reads by its schema)."""
    named = {"columns": list(columns) if columns else None, "id_column": id_column, "time_column": time_column}
    return {name: value for name, value in named.items() if value is not None}


@contextlib.contextmanager
def _cluster(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers`` processes of
    one thread each (numba's and BLAS's too: the processes are the parallelism), with Dask's
    housekeeping turned down (:data:`LOCAL_CLUSTER_CONFIG`)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    one_thread = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with (
        dask.config.set(LOCAL_CLUSTER_CONFIG),
        LocalCluster(n_workers=workers or 1, threads_per_worker=1, dashboard_address=None, env=one_thread) as cluster,
        Client(cluster) as client,
    ):
        yield client


#: Dask settings of the local cluster of ``--workers N``, whose processes share the machine's cores
#: with the client, the scheduler and the nannies: no statistical profiler in the workers (it
#: samples every thread's stack every 10 ms, for the dashboard: 5-7 % of a worker's CPU time in an
#: EM iteration), the event loops' watchdog every second instead of every 20 ms (the client's
#: process, which runs the scheduler and the nannies of a local cluster, spent half its CPU time
#: on it), and glibc's own allocator thresholds in the workers, which run modeshift only (the
#: nanny's ``MALLOC_TRIM_THRESHOLD_`` maps every array above 128 kB afresh: the first pass over the
#: data took 1.04 s instead of 0.69 s on one worker, for 30 MB less at its peak). Measured on 2
#: workers, 2 cores, 10^7 observations, K = 8: docs/distributed.md.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,  # None: not set (distributed.nanny)
}


def _constants(model: Any, source: _Source, client: Any, columns: dict[str, Any]) -> tuple[Any, _Source]:
    """``model._em_constants`` of every partition, merged on the cluster in partition order, and
    the partitions they were read from (:func:`_first_pass`: whole sequences each)."""
    shipped = _portable(model)
    constants, _, source, _ = _first_pass(client, source, _constants_of, (shipped, columns), _nothing, persist=True)
    return _tree_sum(client, constants, functools.partial(_merge_constants, shipped)).result(), source


def _constants_of(part: Any, model: Any, columns: dict[str, Any]) -> Any:
    return None if len(part) == 0 else model._em_constants(part, **columns)


def _merge_constants(model: Any, first: Any, then: Any) -> Any:
    if first is None or then is None:
        return then if first is None else first
    return model._em_merge_constants(first, then)


def _nothing(value: Any) -> None:
    return None


class Shards:
    """The data of one fit as shards of whole sequences, one per partition, read on the workers
    (and kept there, or read again for every pass over the data: ``persist``).

    Called as ``shards(function, model)``, it returns the sum over the shards of
    ``function(model, shard)`` (the ``over`` of :func:`modeshift.models.em.run`): one task per
    worker, carrying the model, sums the terms of the shards kept there, and those sums add
    up on the cluster in a fixed binary tree; only the total reaches the client. ``received``
    counts the bytes of what did (sums and shard sizes), for checks.
    """

    concurrent = True  # several fits may sum over the shards at once (models.em runs restarts so)

    def __init__(
        self,
        client: Any,
        shards: list[Any],
        sizes: list[tuple[int, int]],
        groups: list[tuple[list[int], str | None]],
        source: _Source,
    ):
        self.client, self.shards, self.sizes = client, shards, sizes  # futures, or Dask delayed objects
        self.groups = groups  # the shards each task of a pass sums, in shard order, and the worker holding them
        self.source = source  # the partitions read, known to hold whole sequences (to read them otherwise again)
        self.received: list[int] = []

    @classmethod
    def of(cls, model: Any, source: _Source, client: Any, columns: dict[str, Any], persist: bool = True) -> Shards:
        """Read every partition of ``source`` by ``model._em_data`` on the workers, checking on the
        way that each holds whole sequences (:func:`_first_pass`), and keep it there if ``persist``."""
        shipped = _portable(model)
        shards, sizes, source, placed = _first_pass(client, source, _prepare, (shipped, columns), _size, persist)
        places: list[Any] = placed if persist else list(range(len(shards)))  # the workers the first pass chose
        kept = [(shard, size, place) for shard, size, place in zip(shards, sizes, places) if size[1] > 0]
        if not kept:
            raise ValueError("the data have no rows")
        groups: dict[Any, list[int]] = {}  # a worker's shards (read again at every pass: each shard alone)
        for index, (_, _, place) in enumerate(kept):
            groups.setdefault(place, []).append(index)
        where = [(group, place if persist else None) for place, group in groups.items()]
        shards = cls(client, [shard for shard, _, _ in kept], [size for _, size, _ in kept], where, source)
        shards.received.append(_nbytes(sizes))
        return shards

    def sample(self, max_steps: int | None = None) -> Sequences:
        """Sequences drawn from every shard, brought to the client: where the fit takes its
        starting values. All of them when the data have at most ``max_steps`` steps (default
        :data:`SAMPLE_STEPS`), else sequences 0, j, 2j, ... of each shard, in shard order, with
        j = ceil(steps / ``max_steps``): about ``max_steps`` steps (exactly so for sequences of
        equal length), deterministic, and from every partition."""
        total = sum(steps for _, steps in self.sizes)
        every = max(1, -(-total // (SAMPLE_STEPS if max_steps is None else int(max_steps))))
        picked = [self._task(_pick, shard, every) for shard in self.shards]
        return _join(self.client.gather(picked))

    def __call__(self, function: Callable[..., Any], model: Any, workspace: dict[str, Any] | None = None) -> Any:
        """The sum over the shards of ``function(model, shard)``; with a ``workspace`` (one restart's,
        :mod:`modeshift.models.em`), of ``function(model, shard, the shard's workspace)``, each
        group's workspaces kept on the cluster beside its shards from one call to the next.

        One task per group of shards (:attr:`groups`) carries the model (so it travels once per
        worker, in the same batch as the work) and adds its shards' terms in shard order; the
        groups' sums add up on the cluster in a fixed binary tree (one transfer of a sum
        between workers per addition), and only the total comes to the client, whatever the
        number of workers. A task lost with a worker is run again by Dask from what it depends
        on, the same way."""
        model = _portable(model)
        if workspace is None:
            terms = [self._task(_summed, function, model, *self._of(group), on=on) for group, on in self.groups]
        else:
            states = workspace.get("shards") or [None] * len(self.groups)
            pairs = [
                self._task(_summed_carried, function, model, state, *self._of(group), on=on)
                for (group, on), state in zip(self.groups, states)
            ]
            terms = [self.client.submit(_part, pair, 0, pure=False) for pair in pairs]
            workspace["shards"] = [self.client.submit(_part, pair, 1, pure=False) for pair in pairs]
        total = _tree_sum(self.client, terms).result()
        self.received.append(_nbytes(total))
        return total

    def _of(self, group: list[int]) -> list[Any]:
        return [self.shards[index] for index in group]

    def _task(self, function: Callable[..., Any], *args: Any, on: str | None = None) -> Any:
        """The future of ``function(*args)``, a shard among ``args``: kept on a worker (run there,
        ``on``, while it lives), or a partition to read again."""
        import dask

        if any(hasattr(arg, "dask") for arg in args):
            return self.client.compute(dask.delayed(function, pure=False)(*args))
        return self.client.submit(function, *args, pure=False, workers=on, allow_other_workers=on is not None)


#: The most steps of the sample a fit over shards takes its starting values from (on the client).
SAMPLE_STEPS = 1_000_000


def _client(client: Any) -> Any:
    if client is not None:
        return client
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        raise ValueError(
            "no Dask client: pass client=distributed.Client(...) (or create one first: it becomes the default)"
        ) from None


@dataclasses.dataclass(frozen=True)
class _Source:
    """The partitions of the data (Dask delayed objects) and what makes each hold whole sequences:
    ``id_column``, whose values must each lie in one partition (None: nothing left to check), and
    ``frame``, the Dask DataFrame to shuffle by it when they do not (if ``ordered``: a time column
    orders the rows of a sequence, so that the shuffle loses nothing)."""

    parts: list[Any]
    frame: Any = None
    id_column: str | None = None
    ordered: bool = False

    def checked(self) -> _Source:
        """The same partitions, known to hold whole sequences."""
        return dataclasses.replace(self, id_column=None)

    def shuffled(self) -> _Source:
        """The frame shuffled by id, for partitions that split sequences (a ValueError if nothing orders the rows)."""
        if not self.ordered:
            raise ValueError(
                f"some sequences (values of {self.id_column!r}) lie in several partitions; each must lie in "
                f"one: shuffle the frame by id (frame.shuffle(on={self.id_column!r})), or name the "
                "time_column that orders the rows, and they are shuffled here"
            )
        frame = self.frame.shuffle(on=self.id_column)
        return _Source(list(frame.to_delayed()), frame)


def _source(data: Any, columns: dict[str, Any], schema: Any = None) -> _Source:
    """The partitions of ``data`` (a Dask DataFrame, a path to Parquet or a Dask bag of sequences)
    as ``fit`` reads them with ``columns``, or a fitted model with its ``schema`` when none are named."""
    import dask.bag as db

    if isinstance(data, db.Bag):
        if columns:
            raise ValueError(f"a bag of sequences has no columns to name, got {sorted(columns)}")
        return _Source([_bag_partition(part) for part in data.to_delayed()])
    frame = _frame(data, " or a Dask bag of sequences")
    by_schema = schema is not None and not columns
    id_column = columns.get("id_column", "id")
    if by_schema:
        id_column = schema.id_column or ("case_id" if schema.symbols else "id")
    time_column = columns.get("time_column")
    ordered = bool(schema.time_columns) if by_schema else isinstance(time_column, str) and time_column != "auto"
    parts = list(frame.to_delayed())
    if id_column in frame.columns:
        return _Source(parts, frame, id_column, ordered)
    if frame.npartitions > 1:
        raise ValueError(
            f"the frame has no id column {id_column!r}, so it is one sequence, but it has "
            f"{frame.npartitions} partitions: name the id column, or repartition to one partition"
        )
    return _Source(parts, frame)


def _frame(data: Any, also: str = "") -> Any:
    """``data`` as a Dask DataFrame (a path: its Parquet dataset)."""
    import dask.dataframe as dd

    if isinstance(data, (str, PathLike)):
        return dd.read_parquet(data)
    if not isinstance(data, dd.DataFrame):
        raise TypeError(f"expected a Dask DataFrame{also} or a path to Parquet, got {type(data).__name__}")
    return data


def _bag_partition(part: Any) -> Any:
    """A bag partition (an iterable of sequences) as a list, lazily."""
    import dask

    return dask.delayed(list, pure=True)(part)


def _first_pass(
    client: Any,
    source: _Source,
    read: Callable[..., Any],
    args: tuple[Any, ...],
    summary: Callable[[Any], Any],
    persist: bool,
) -> tuple[list[Any], list[Any], _Source, list[str]]:
    """The one pass over the data before EM: ``read(part, *args)`` of every partition, on the
    cluster, and in the same task the ids the partition holds, which meet on the cluster (only
    whether two partitions share one reaches the client). Returns the results, their
    ``summary`` (brought to the client, in partition order), the source read and the worker
    each result was placed on (none without ``persist``). One task reads a partition and
    converts it when it can (:func:`_own_reads`), so a worker holds no raw partition but the
    one it converts.

    With ``persist`` the results are futures kept on the workers, partition i on worker
    i n / (number of partitions) (an even split of the E-steps whatever the scheduler would
    do with tasks that finish at once, and neighbours on one worker, whose statistics one task
    adds up there: :meth:`Shards.__call__`); else Dask delayed objects that read their
    partition again. Partitions that split a sequence make the pass start again on the frame
    shuffled by id (:meth:`_Source.shuffled`); else the first partition that could not be read
    raises its error (one that splits a sequence might not read: that is checked first)."""
    import dask

    shipped = dask.delayed(args, pure=True)
    pairs = [
        dask.delayed(_checked, pure=True)(read, part, index, shipped, source.id_column)
        for index, part in enumerate(_own_reads(source.parts))
    ]
    placed: list[str] = []
    if persist:
        workers = _workers(client)
        placed = [workers[place] for place in _places(len(pairs), workers)]
        pairs = [client.compute(pair, workers=[on], allow_other_workers=True) for pair, on in zip(pairs, placed)]
        node: Callable[..., Any] = functools.partial(_submit, client)
    else:
        node = _delayed
    results = [node(_part, pair, 0) for pair in pairs]
    wanted = [node(_summary, summary, result) for result in results]
    if source.id_column is not None:
        ids = [node(_part, pair, 1) for pair in pairs]
        wanted.append(_shared_ids(ids, node))
    got = client.gather(wanted if persist else client.compute(wanted))
    if source.id_column is not None and got.pop():
        return _first_pass(client, source.shuffled(), read, args, summary, persist)
    for value in got:
        if isinstance(value, Exception):
            raise value
    return results, got, source.checked(), placed


class _Partition:
    """One partition of a Dask collection as a plain value: its key and the tasks it needs (a
    graph), computed where a task that takes it runs (:meth:`read`)."""

    __slots__ = ("graph", "key")  # a plain class: Dask does not look inside it for dependencies

    def __init__(self, key: Any, graph: dict[Any, Any]):
        self.key, self.graph = key, graph

    def read(self) -> Any:
        import dask

        return dask.get(self.graph, self.key)


def _own_reads(parts: list[Any]) -> list[Any]:
    """``parts`` (Dask delayed objects) as :class:`_Partition` values when no two of them need
    one task (each reads its own data, as Parquet files or frames in memory do), else as they are.

    A task that reads its partition itself, rather than depending on a task that reads it,
    holds it only while it converts it: as dependencies, a worker's reads ran first and held
    every raw partition of the worker at once (955 against 696 MB on one worker for 10^7
    observations, even with the earlier partitions given priority), and each partition cost
    two tasks and a round trip to the scheduler. Partitions that share work, such as those of a
    shuffle (each needs all of the data), and those of a persisted collection (already on the
    workers, futures in the graph), stay Dask's to compute."""
    from dask.optimization import cull
    from distributed import Future

    layers: dict[int, dict[Any, Any]] = {}  # the partitions share their graph's layers: each made a dict once
    needed: set[Any] = set()
    own = []
    for part in parts:
        graph = part.__dask_graph__()
        own_layers = list(getattr(graph, "layers", {None: graph}).values())  # a HighLevelGraph's, or the graph
        for layer in own_layers:
            if id(layer) not in layers:
                layers[id(layer)] = dict(layer)
        tasks = cull(ChainMap(*(layers[id(layer)] for layer in own_layers)), [part.key])[0]
        if not needed.isdisjoint(tasks) or any(isinstance(task, Future) for task in tasks.values()):
            return parts
        needed.update(tasks)
        own.append(_Partition(part.key, tasks))
    return own


def _checked(
    read: Callable[..., Any], partition: Any, index: int, args: tuple[Any, ...], id_column: str | None
) -> tuple[Any, tuple[np.ndarray, bool] | None]:
    """``read(part, *args)`` of the partition (a :class:`_Partition` read here, or the partition
    itself), or the error it raised (naming the partition), and the ids it holds (:func:`_id_set`;
    None without an id column to check)."""
    part = partition.read() if isinstance(partition, _Partition) else partition
    ids = None if id_column is None else _id_set(part[id_column])
    try:
        return read(part, *args), ids
    except (ValueError, TypeError) as error:
        return type(error)(f"partition {index}: {error}"), ids


def _summary(summary: Callable[[Any], Any], result: Any) -> Any:
    return result if isinstance(result, Exception) else summary(result)


def _whole(source: _Source) -> _Source:
    """``source`` with every sequence in one partition: checked on the cluster (the id column alone
    is read, the ids meet there), shuffled by id if need be."""
    if source.id_column is None:
        return source
    ids = [_delayed(_id_set, part) for part in source.frame[source.id_column].to_delayed()]
    if _shared_ids(ids, _delayed).compute():
        return source.shuffled()
    return source.checked()


def _shared_ids(ids: list[Any], node: Callable[..., Any]) -> Any:
    """Whether two partitions share an id, from their :func:`_id_set` results ``ids``, merged on
    the cluster in a tree of ``node`` tasks (only the answer reaches the client)."""
    return node(_overlaps, _tree(ids, functools.partial(node, _merge_ids)))


def _id_set(ids: pd.Series) -> tuple[np.ndarray, bool]:
    """A partition's distinct ids (sorted), and whether two partitions share one (not yet)."""
    return np.sort(pd.unique(ids.to_numpy())), False  # hashed, then the few distinct sorted: no sort of every row


def _merge_ids(a: tuple[np.ndarray, bool], b: tuple[np.ndarray, bool]) -> tuple[np.ndarray, bool]:
    shared = a[1] or b[1] or np.intersect1d(a[0], b[0]).size > 0
    return np.union1d(a[0], b[0]), shared


def _overlaps(merged: tuple[np.ndarray, bool]) -> bool:
    return merged[1]


def _prepare(part: Any, model: Any, columns: dict[str, Any]) -> Sequences | None:
    """One partition read as ``fit`` reads its data (None when it is empty), without its time
    stamps: no fit over a cluster reads them (:func:`_fit` refuses a model that says
    ``reads_times``), and they would be a third of a shard of two value columns."""
    return None if len(part) == 0 else dataclasses.replace(model._em_data(part, **columns), times=None)


def _size(shard: Sequences | None) -> tuple[int, int]:
    return (0, 0) if shard is None else (shard.n_sequences, shard.n_steps)


def _portable(model: Any) -> Any:
    """A copy of ``model`` to ship to the workers: without its callback (which may hold the client)."""
    shipped = copy.copy(model)
    shipped.__dict__.update(callback=None, verbose=False)
    return shipped


def _one_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` run with numba's compiled loops on the calling thread only: on a worker the
    parallelism is its threads and the processes (numba's own team in every task on top of
    them would put several threads on each core)."""

    @functools.wraps(function)
    def run(*args: Any) -> Any:
        with threads_for(1):
            return function(*args)

    return run


def _workers(client: Any) -> list[str]:
    """The addresses of the cluster's workers, in order."""
    return sorted(client.scheduler_info()["workers"])


def _places(n_parts: int, workers: list[str]) -> list[int]:
    """Where each of ``n_parts`` partitions is read and kept: partition i on worker i n / n_parts of
    the n ``workers`` (neighbours together, an even split)."""
    return [i * len(workers) // n_parts for i in range(n_parts)]


@_one_thread
def _summed(function: Callable[[Any, Any], Any], model: Any, *shards: Any) -> Any:
    """The sum of ``function(model, shard)`` over ``shards``, added in their order (a copy of the
    model for each: the function may leave something on it)."""
    return functools.reduce(combine, (function(copy.deepcopy(model), shard) for shard in shards))


@_one_thread
def _summed_carried(
    function: Callable[..., Any], model: Any, states: list[dict] | None, *shards: Any
) -> tuple[Any, list[dict]]:
    """The sum of ``function(model, shard, workspace)`` over ``shards`` and their workspaces
    ``states`` (None: empty ones), and the shards' next workspaces (new dicts: the last ones stay
    as they were, so that a task run again gives the same result)."""
    states = [dict(state) for state in states or [{} for _ in shards]]
    terms = (function(copy.deepcopy(model), shard, state) for shard, state in zip(shards, states))
    return functools.reduce(combine, terms), states  # added as they come: one term held at a time


def _part(pair: tuple[Any, Any], index: int) -> Any:
    return pair[index]


def _pick(shard: Sequences, every: int) -> Sequences:
    """Sequences 0, ``every``, 2 ``every``, ... of ``shard``."""
    return shard.subset(np.arange(shard.n_sequences) % every == 0)


def _join(parts: list[Sequences]) -> Sequences:
    """The sequences of ``parts`` one after another (the first part's vocabulary and schema)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def stacked(name: str) -> np.ndarray | None:
        blocks = [getattr(part, name) for part in parts]
        return None if any(block is None for block in blocks) else np.concatenate(blocks)

    ids = [part.ids for part in parts]
    return dataclasses.replace(
        first,
        values=stacked("values"),
        offsets=np.r_[0, np.cumsum(np.concatenate([part.lengths for part in parts]))],
        times=stacked("times"),
        inputs=stacked("inputs"),
        ids=None if any(part is None for part in ids) else [i for part in ids for i in part],
        row_order=None,
    )


def _tree_sum(client: Any, terms: list[Any], add: Callable[[Any, Any], Any] = combine) -> Any:
    """The sum of the futures ``terms`` added pairwise in a fixed binary tree, on the cluster."""
    return _tree(terms, functools.partial(_submit, client, add))


def _tree(terms: list[Any], add: Callable[[Any, Any], Any]) -> Any:
    """``terms`` added in a fixed binary tree (0 + 1, 2 + 3, ..., then the pairs' sums likewise) by
    ``add(a, b)``, which makes the node of each sum (a future, a Dask delayed object)."""
    while len(terms) > 1:
        pairs = [add(a, b) for a, b in zip(terms[::2], terms[1::2])]
        terms = pairs + terms[len(pairs) * 2 :]
    return terms[0]


def _submit(client: Any, function: Callable[..., Any], *args: Any) -> Any:
    return client.submit(function, *args, pure=False)


def _delayed(function: Callable[..., Any], *args: Any) -> Any:
    import dask

    return dask.delayed(function, pure=True)(*args)


def _nbytes(value: Any) -> int:
    from dask.sizeof import sizeof

    return int(sizeof(value))


# ------------------------------------------------------------- decoding and scoring
def score(model: Scorer, data: Any, **columns: Any) -> Any:
    """log p(data) under ``model``, summed over the partitions: a Dask delayed number (``.compute()``).

    As for :func:`predict`, :func:`predict_proba` and :func:`segment`, the partitions are checked
    first (on the cluster, now) to hold whole sequences, and shuffled by id when they do not and
    a time column orders the rows (:func:`_decoded`)."""
    return _scored(model, _decoded(model, data, columns), columns)


def _scored(model: Scorer, source: _Source, columns: dict[str, Any]) -> Any:
    """log p of the partitions of ``source``, each holding whole sequences, summed: a Dask delayed number."""
    terms = [_delayed(_score_part, part, model, columns) for part in source.parts]
    return _tree(terms, functools.partial(_delayed, _add))


def predict(model: ModeDecoder, data: Any, **columns: Any) -> Any:
    """The rows of ``data`` (a Dask DataFrame) with ``mode``, their most likely mode: a Dask DataFrame
    (as :func:`predict_proba`, without the rows a model conditions on: the first ``order`` of each
    sequence of a Markov autoregression)."""
    return _per_row(model, data, "predict", columns)


def predict_proba(model: ModeDecoder, data: Any, **columns: Any) -> Any:
    """The rows of ``data`` with ``p_0`` .. ``p_K-1``, their smoothed mode probabilities: a Dask DataFrame."""
    return _per_row(model, data, "predict_proba", columns)


def segment(model: Segmenter, data: Any, **columns: Any) -> Any:
    """Runs of one mode per sequence (``id``, ``start``, ``end``, ``mode``, ``probability``): a Dask DataFrame."""
    import dask.dataframe as dd

    frame = _decoded(model, _frame(data), columns).frame
    id_column = columns.get("id_column", "id")
    meta = pd.DataFrame(
        {
            id_column: pd.Series(dtype=frame.dtypes.get(id_column, "int64")),
            "start": pd.Series(dtype="int64"),
            "end": pd.Series(dtype="int64"),
            "mode": pd.Series(dtype="int64"),
            "probability": pd.Series(dtype="float64"),
        }
    )
    return dd.map_partitions(_segment_part, frame, model, columns, meta=meta, align_dataframes=False)


def _decoded(model: Any, data: Any, columns: dict[str, Any]) -> _Source:
    """The partitions of ``data`` as the fitted ``model`` reads them (:func:`_read`), each holding
    whole sequences (:func:`_whole`)."""
    return _whole(_source(data, columns, model.__dict__.get("schema_")))


def _read(model: Any, part: Any, columns: dict[str, Any]) -> Any:
    """One partition as the fitted model reads new data: by its schema, else as ``fit`` reads data."""
    schema = model.__dict__.get("schema_")
    if isinstance(part, pd.DataFrame) and schema is not None and not columns:
        return schema.read(part)
    if isinstance(model, ShardableFit):
        return model._em_data(part, **columns)
    return as_sequences(part, **columns)


@_one_thread
def _score_part(part: Any, model: Any, columns: dict[str, Any]) -> float:
    return 0.0 if len(part) == 0 else float(model.score(_read(model, part, columns)))


def _add(a: float, b: float) -> float:
    return a + b


def _per_row(model: Any, data: Any, method: str, columns: dict[str, Any]) -> Any:
    import dask.dataframe as dd

    frame = _decoded(model, _frame(data), columns).frame
    names = ["mode"] if method == "predict" else [f"p_{k}" for k in range(model._k)]
    dtype = "int64" if method == "predict" else "float64"
    meta = frame._meta.assign(**{name: pd.Series(dtype=dtype) for name in names})
    return dd.map_partitions(_per_row_part, frame, model, method, names, columns, meta=meta, align_dataframes=False)


@_one_thread
def _per_row_part(part: pd.DataFrame, model: Any, method: str, names: Sequence[str], columns: dict[str, Any]) -> Any:
    if len(part) == 0:
        return part.assign(**{name: pd.Series(dtype="int64" if method == "predict" else "float64") for name in names})
    seqs = _read(model, part, columns)
    result = np.asarray(getattr(model, method)(seqs))
    part = part[_with_results(seqs, len(result))]
    return part.assign(**dict(zip(names, result.reshape(len(part), -1).T)))


def _with_results(seqs: Sequences, n_results: int) -> np.ndarray:
    """Which rows of a partition read as ``seqs`` have a per-step result, of ``n_results``: all, or
    for a model that conditions on the first steps of each sequence (a Markov autoregression on
    its first ``order``) all but those."""
    keep = np.ones(seqs.n_steps, dtype=bool)
    skip = (seqs.n_steps - n_results) // seqs.n_sequences
    if skip:
        first = np.concatenate([np.arange(a, a + skip) for a in seqs.offsets[:-1]])  # in the sequences' order
        keep[first if seqs.row_order is None else seqs.row_order[first]] = False
    return keep


@_one_thread
def _segment_part(part: pd.DataFrame, model: Any, columns: dict[str, Any]) -> pd.DataFrame:
    id_column = columns.get("id_column", "id")
    if len(part) == 0:
        return pd.DataFrame(columns=[id_column, "start", "end", "mode", "probability"])
    seqs = _read(model, part, columns)
    table = model.segment(seqs)
    if "sequence" not in table:
        table.insert(0, "sequence", 0)
    ids = np.asarray(seqs.ids) if seqs.ids is not None else np.zeros(seqs.n_sequences, dtype=int)
    table.insert(0, id_column, ids[table.pop("sequence").to_numpy()])
    return table[[id_column, "start", "end", "mode", "probability"]]


# ------------------------------------------------ the dispatch of the models' methods
def _handle(method: str, model: Any, data: Any, *args: Any, client: Any = None, **kwargs: Any) -> Any:
    """``model.method(data, ...)`` for a Dask collection (or with ``client=``): the functions above."""
    if args:
        raise TypeError(f"{type(model).__name__}.{method} over a Dask collection takes no lengths: the id column cuts")
    if method == "fit":
        return fit(model, data, client=client, **kwargs)
    return {"score": score, "predict": predict, "predict_proba": predict_proba, "segment": segment}[method](
        model, data, **kwargs
    )


set_collection_handler(_handle)
