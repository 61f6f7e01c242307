"""One array layout for the compiled functions, so that each compiles once.

numba compiles a function once per distinct argument type, and an array's type includes its
layout (C-contiguous, Fortran, or any strides) and whether it is read-only. A view (a column
slice ``W[:, :n]``, a row of a read-only data frame's values, ``np.broadcast_to``) then costs a
compilation of every kernel it reaches: seconds each, for the same arithmetic. Callers that may
hold such views pass :func:`canonical` arrays, the layout every kernel is compiled for.

>>> import numpy as np
>>> weights = np.arange(6.0).reshape(2, 3)
>>> view = weights[:, :2]
>>> view.flags.c_contiguous, canonical(view).flags.c_contiguous
(False, True)
>>> canonical(weights) is weights  # already canonical: no copy
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["canonical"]


def canonical(array: Any) -> np.ndarray:
    """``array`` as a C-contiguous, writable float64 array: itself when it is one, else a copy."""
    array = np.asarray(array, dtype=np.float64)
    return array if array.flags.c_contiguous and array.flags.writeable else np.array(array, order="C")
