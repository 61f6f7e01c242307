"""The compiled kernels' on-disk cache: each signature's code in a file of its own, so that
processes compiling at once never leave an index entry that points at another signature's code."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import textwrap

from numba.core.dispatcher import Dispatcher

import modeshift._kernels
from modeshift._kernels.compile import _KeyedCacheFile


def _cache_file(path, stale_index=None) -> _KeyedCacheFile:
    """One process's view of a function's cache in ``path``; with ``stale_index``, its next read
    of the index returns that (another process wrote the index since)."""
    cache = _KeyedCacheFile(cache_path=str(path), filename_base="kernels.f-1.py311", source_stamp=(0.0, 1))
    if stale_index is not None:
        reads, fresh = [stale_index], cache._load_index
        cache._load_index = lambda: reads.pop() if reads else fresh()
    return cache


def _during(cache: _KeyedCacheFile, other_save) -> None:
    """Run ``other_save()`` once, right after the first file ``cache``'s next save writes (its
    index or its data): another process saving in the middle of this one's save."""
    pending = [other_save]
    for name in ("_save_index", "_save_data"):
        write = getattr(cache, name)

        def written(*args, write=write):
            write(*args)
            while pending:
                pending.pop()()

        setattr(cache, name, written)


def test_two_signatures_saved_at_once_each_load_their_own_code_or_none(tmp_path):
    """Process b saves signature b in the middle of process a's save of a, having read the
    index before a wrote it. numba's own files would give both the number 1, the index ending
    as b's and the file as a's: b would load a's code. Here each loads its own code, or none
    (an entry lost: compiled again)."""
    a, b = _cache_file(tmp_path), _cache_file(tmp_path, stale_index={})
    _during(a, lambda: b.save(("int64[:]",), "code of b"))
    a.save(("float64[:]",), "code of a")
    reader = _cache_file(tmp_path)
    loaded = reader.load(("float64[:]",)), reader.load(("int64[:]",))
    assert loaded[0] in (None, "code of a") and loaded[1] in (None, "code of b")
    assert loaded == ("code of a", "code of b")  # the index read afresh before a's write keeps b's entry


def test_saving_again_keeps_the_other_entries_and_one_file_per_signature(tmp_path):
    a = _cache_file(tmp_path)
    a.save(("float64[:]",), "code of a")
    a.save(("int64[:]",), "code of b")
    a.save(("float64[:]",), "code of a, compiled again")
    reader = _cache_file(tmp_path)
    assert reader.load(("float64[:]",)) == "code of a, compiled again"
    assert reader.load(("int64[:]",)) == "code of b"
    assert len(list(tmp_path.glob("*.nbc"))) == 2


def _dispatchers():
    """Every compiled function of modeshift's kernel modules (a parallel kernel's two)."""
    for info in pkgutil.iter_modules(modeshift._kernels.__path__):
        module = importlib.import_module(f"modeshift._kernels.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher):
                yield name, value
            for variant in ("compiled", "serial"):
                if isinstance(getattr(value, variant, None), Dispatcher):
                    yield f"{name}.{variant}", getattr(value, variant)


def test_every_kernel_caches_its_signatures_in_files_of_their_own():
    found = dict(_dispatchers())
    assert len(found) > 80
    plain = [name for name, dispatcher in found.items() if type(dispatcher._cache._cache_file) is not _KeyedCacheFile]
    assert not plain, f"compiled with numba's own cache files: {plain}"


_MODULE = """
import numpy as np
from modeshift._kernels.compile import kernel

@kernel
def total(x):
    s = x[0] * 0
    for v in x:
        s += v
    return s
"""


def test_a_kernel_compiled_in_one_process_is_loaded_by_the_next(tmp_path):
    """The files are named after the signatures the same way in every process: a second
    process loads both signatures from the cache (no compile, no new file) and gets the sums."""
    (tmp_path / "summing.py").write_text(textwrap.dedent(_MODULE))
    script = textwrap.dedent(
        """
        import numpy as np, summing
        print(summing.total(np.arange(4.0)), summing.total(np.arange(5)), sum(summing.total.stats.cache_hits.values()))
        """
    )
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert [run.stdout.split() for run in runs] == [["6.0", "10", "0"], ["6.0", "10", "2"]]
    assert len(list((tmp_path / "cache").rglob("*.nbc"))) == 2
