"""Type stub of the compiled curve kernels (``curve_kernels.pyx``); see the NumPy twin."""

from workbench._types import FloatArray, IntArray

LOG_LINEAR: int
MONOTONE_CONVEX: int

def interp_log_df(
    method: int, node_t: FloatArray, node_logdf: FloatArray, query_t: FloatArray, out: FloatArray
) -> None: ...
def interp_log_df_rows(
    method: int, node_t: FloatArray, node_logdf: FloatArray, query_t: FloatArray, out: FloatArray
) -> None: ...
def interp_log_df_jacobian(
    method: int,
    node_t: FloatArray,
    node_logdf: FloatArray,
    query_t: FloatArray,
    out: FloatArray,
    jac: FloatArray,
) -> None: ...
def bootstrap(
    method: int,
    node_t: FloatArray,
    query_t: FloatArray,
    c0: FloatArray,
    term_ptr: IntArray,
    term_w: FloatArray,
    term_a: IntArray,
    term_b: IntArray,
    logdf: FloatArray,
    tol: float,
    max_iter: int,
) -> int: ...
def bootstrap_rows(
    method: int,
    node_t: FloatArray,
    query_t: FloatArray,
    c0: FloatArray,
    term_ptr: IntArray,
    term_w: FloatArray,
    term_a: IntArray,
    term_b: IntArray,
    logdf: FloatArray,
    tol: float,
    max_iter: int,
    status: IntArray,
) -> None: ...
