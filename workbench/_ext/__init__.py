"""Curve kernels behind one contract: a compiled implementation and a pure NumPy twin.

The backend is chosen at import: the compiled module ``workbench._ext.curve_kernels`` when it
is built, else the twin ``workbench._ext.curve_kernels_np``. ``WORKBENCH_BACKEND=numpy`` forces
the twin; ``WORKBENCH_BACKEND=cython`` requires the compiled module.
"""

from __future__ import annotations

import os
from types import ModuleType

from workbench._ext import curve_kernels_np as numpy_twin


def _select() -> tuple[ModuleType, str]:
    wanted = os.environ.get("WORKBENCH_BACKEND", "").strip().lower()
    if wanted == "numpy":
        return numpy_twin, "numpy"
    try:
        from workbench._ext import curve_kernels
    except ImportError:
        if wanted == "cython":
            raise ImportError(
                "WORKBENCH_BACKEND=cython but workbench._ext.curve_kernels is not built; "
                "run `python setup.py build_ext --inplace`"
            ) from None
        return numpy_twin, "numpy"
    return curve_kernels, "cython"


_backend, BACKEND = _select()
LOG_LINEAR: int = numpy_twin.LOG_LINEAR
MONOTONE_CONVEX: int = numpy_twin.MONOTONE_CONVEX
interp_log_df = _backend.interp_log_df
interp_log_df_jacobian = _backend.interp_log_df_jacobian
interp_log_df_rows = _backend.interp_log_df_rows
bootstrap = _backend.bootstrap
bootstrap_rows = _backend.bootstrap_rows

__all__ = [
    "BACKEND",
    "LOG_LINEAR",
    "MONOTONE_CONVEX",
    "bootstrap",
    "bootstrap_rows",
    "interp_log_df",
    "interp_log_df_jacobian",
    "interp_log_df_rows",
    "numpy_twin",
]
