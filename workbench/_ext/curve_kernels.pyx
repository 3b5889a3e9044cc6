# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Curve kernels in C: log-DF interpolation (log-linear, monotone convex) and bootstrap.

The compiled twin of :mod:`workbench._ext.curve_kernels_np`: same signatures, same results to
rounding (the tests hold them to 1e-12). The formulas and every branch decision (Hagan–West
region, positivity collar, interval search) are the twin's, written per query point instead of
per batch.

Derivatives follow the twin's complex step, restricted to what a query depends on: the node
log-DF of its interval, the discrete forward ``fd_k`` and the node forwards ``f_k``, ``f_{k+1}``,
each of which depends on at most two discrete forwards. A query's log DF therefore depends on
at most four consecutive node log-DFs; for each of them one complex step (of the twin's size,
in the twin's direction, branches chosen on the real part) goes through Hagan–West's ``∫g``.
The forwards feeding the derivative are divided as the twin's complex arithmetic divides
(times the reciprocal of the interval): where a node forward nearly cancels a discrete forward
the Jacobian depends on that last bit. On a node (``x`` = 0, or 1 at the last node) ``∫g`` is
0 whatever ``g``, and the derivative is taken as exactly that. The Newton matrix of the
bootstrap is assembled from the four-wide rows.

All arrays are float64 or int64 and C-contiguous; the outputs are written in place. The inner
loops run without the GIL and allocate nothing but one scratch block per call.
"""

from libc.math cimport exp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

LOG_LINEAR = 0
MONOTONE_CONVEX = 1

cdef enum:
    _LOG_LINEAR = 0
    _W = 4  # a query's log DF depends on at most this many consecutive node log-DFs
    _STACK_NODES = 64  # curves up to this many nodes need no heap scratch for interpolation

cdef double _STEP = 1e-20  # complex step, as in the twin (Squire & Trapp 1998)

ctypedef fused num:
    double
    double complex


cdef struct Curve:
    int n  # nodes, node 0 at (t = 0, log P = 0)
    int method
    const double* t  # node times (n)
    double* dt  # interval lengths (n - 1)
    double* rdt  # their reciprocals (n - 1)
    double* fd  # discrete forwards (n - 1)
    double* f  # node forwards (n), monotone convex only
    double* cl  # ∂f_j/∂fd[lo(j)] (n)
    double* cr  # ∂f_j/∂fd[lo(j) + 1] (n)


cdef struct Query:
    int k  # interval: nodes k and k + 1
    int beyond  # past the last node
    double x  # position in the interval, clipped to [.., 1]
    double q  # the query time


# ------------------------------------------------------------------------------------------
# per-curve set-up


cdef inline double _re(num z) noexcept nogil:
    if num is double:
        return z
    else:
        return z.real


cdef enum:
    _CURVE_WORDS = 6  # doubles of scratch per node: dt, rdt, fd, f, cl, cr


cdef void _bind(Curve* c, int method, const double* t, int n, double* buf) noexcept nogil:
    """Lay the curve's scratch out in ``buf`` (``_CURVE_WORDS * n`` doubles)."""
    c.n = n
    c.method = method
    c.t = t
    c.dt = buf
    c.rdt = buf + n
    c.fd = buf + 2 * n
    c.f = buf + 3 * n
    c.cl = buf + 4 * n
    c.cr = buf + 5 * n


cdef void _intervals(Curve* c) noexcept nogil:
    cdef int j
    for j in range(c.n - 1):
        c.dt[j] = c.t[j + 1] - c.t[j]
        c.rdt[j] = 1.0 / c.dt[j]


cdef void _forwards(Curve* c, const double* y, bint for_derivative) noexcept nogil:
    """Discrete forwards; for monotone convex the node forwards and their sensitivities.

    ``for_derivative`` divides by an interval as the twin's complex step does (times the
    reciprocal, NumPy's complex division by a real): where a node forward nearly cancels
    a discrete forward, the Jacobian is sensitive to that last bit.
    """
    cdef int m = c.n - 1
    cdef int j
    cdef double w, hi, hl, hr
    cdef bint positive = True
    cdef double* fd = c.fd
    cdef double* f = c.f
    cdef double* cl = c.cl
    cdef double* cr = c.cr
    for j in range(m):
        if for_derivative:
            fd[j] = -(y[j + 1] - y[j]) * c.rdt[j]
        else:
            fd[j] = -(y[j + 1] - y[j]) / c.dt[j]
        if not fd[j] > 0.0:
            positive = False
    if c.method == _LOG_LINEAR:
        return
    if m == 1:
        f[0] = fd[0]
        f[1] = fd[0]
        cl[0] = 1.0
        cl[1] = 1.0
        cr[0] = 0.0
        cr[1] = 0.0
        return
    for j in range(1, m):
        w = c.dt[j - 1] / (c.dt[j - 1] + c.dt[j])  # weight of fd[j] at node j
        f[j] = w * fd[j] + (1.0 - w) * fd[j - 1]
        cl[j] = 1.0 - w
        cr[j] = w
    f[0] = fd[0] - 0.5 * (f[1] - fd[0])
    cl[0] = 1.5 - 0.5 * cl[1]
    cr[0] = -0.5 * cr[1]
    f[m] = fd[m - 1] - 0.5 * (f[m - 1] - fd[m - 1])
    cl[m] = -0.5 * cl[m - 1]
    cr[m] = 1.5 - 0.5 * cr[m - 1]
    if not positive:
        return
    # positivity collar: f_j in [0, 2 min(fd next to node j)]
    for j in range(m + 1):
        if j == 0:
            hi = 2.0 * fd[0]
            hl = 2.0
            hr = 0.0
        elif j == m:
            hi = 2.0 * fd[m - 1]
            hl = 0.0
            hr = 2.0
        elif fd[j - 1] <= fd[j]:
            hi = 2.0 * fd[j - 1]
            hl = 2.0
            hr = 0.0
        else:
            hi = 2.0 * fd[j]
            hl = 0.0
            hr = 2.0
        if f[j] < 0.0:
            f[j] = 0.0
            cl[j] = 0.0
            cr[j] = 0.0
        elif f[j] > hi:
            f[j] = hi
            cl[j] = hl
            cr[j] = hr


cdef inline int _lo(int j, int m) noexcept nogil:
    """The first of the two discrete forwards node forward ``f_j`` depends on."""
    cdef int lo = j - 1
    if lo > m - 2:
        lo = m - 2
    return lo if lo > 0 else 0


# ------------------------------------------------------------------------------------------
# Hagan–West


cdef num _g_integral(num g0, num g1, double x) noexcept nogil:
    """∫₀ˣ g(u) du for Hagan–West's g with g(0) = g0, g(1) = g1 and ∫₀¹ g = 0.

    The region and the inner switch points are chosen on the real parts.
    """
    cdef double a0 = _re(g0)
    cdef double a1 = _re(g1)
    cdef num eta, s, a, u, v
    if a0 == 0.0 and a1 == 0.0:
        return 0.0
    if (a0 < 0 and -0.5 * a0 <= a1 and a1 <= -2.0 * a0) or (
        a0 > 0 and -0.5 * a0 >= a1 and a1 >= -2.0 * a0
    ):
        # (i) quadratic
        return g0 * (x - 2 * x * x + x * x * x) + g1 * (x * x * x - x * x)
    if (a0 < 0 and a1 > -2.0 * a0) or (a0 > 0 and a1 < -2.0 * a0):
        # (ii) flat at g0, then a quadratic rise to g1
        eta = (g1 + 2 * g0) / (g1 - g0)
        if x > _re(eta):
            u = x - eta
            v = 1 - eta
            return g0 * x + (g1 - g0) * (u * u * u) / (3 * (v * v))
        return g0 * x
    if (a0 > 0 and a1 < 0 and a1 > -0.5 * a0) or (a0 < 0 and a1 > 0 and a1 < -0.5 * a0):
        # (iii) quadratic from g0 to g1, then flat at g1
        eta = 3 * g1 / (g1 - g0)
        if x < _re(eta):
            u = (eta - x) / eta
            return g1 * x + (g0 - g1) * (eta / 3) * (1 - u * u * u)
        return g1 * x + (g0 - g1) * (eta / 3)
    # (iv) two quadratics meeting at A
    s = g0 + g1
    eta = g1 / s
    a = -g0 * g1 / s
    if x < _re(eta):
        u = (eta - x) / eta
        return a * x + (g0 - a) * (eta / 3) * (1 - u * u * u)
    u = x - eta
    v = 1 - eta
    return a * x + (g0 - a) * eta / 3 + (g1 - a) * (u * u * u) / (3 * (v * v))


# ------------------------------------------------------------------------------------------
# one query point


cdef inline void _locate(const Curve* c, double q, Query* out) noexcept nogil:
    """Interval of ``q`` as ``searchsorted(node_t, q, side="right")`` clipped to [1, n-1]."""
    cdef int lo = 0
    cdef int hi = c.n
    cdef int mid
    cdef double x
    while lo < hi:
        mid = (lo + hi) >> 1
        if q < c.t[mid]:
            hi = mid
        else:
            lo = mid + 1
    if lo < 1:
        lo = 1
    elif lo > c.n - 1:
        lo = c.n - 1
    out.k = lo - 1
    out.q = q
    out.beyond = q > c.t[c.n - 1]
    x = (q - c.t[lo - 1]) / c.dt[lo - 1]
    if x > 1.0:
        x = 1.0
    out.x = x


cdef inline double _value(const Curve* c, const double* y, const Query* p) noexcept nogil:
    """log P at one located query."""
    cdef int k = p.k
    cdef int m = c.n - 1
    cdef double h, fdi
    if p.beyond:
        if c.method == _LOG_LINEAR:
            return y[m] - c.fd[m - 1] * (p.q - c.t[m])
        return y[m] - c.f[m] * (p.q - c.t[m])
    h = c.dt[k]
    fdi = c.fd[k]
    if c.method == _LOG_LINEAR:
        return y[k] - fdi * h * p.x
    return y[k] - h * (fdi * p.x + _g_integral(c.f[k] - fdi, c.f[k + 1] - fdi, p.x))


cdef inline int _base(int k, int n) noexcept nogil:
    """First node log-DF of a query's four-wide dependency window."""
    cdef int b = k - 1
    if b > n - _W:
        b = n - _W
    return b if b > 0 else 0


cdef inline double _dfd(const Curve* c, int i, int j) noexcept nogil:
    """∂fd[i]/∂y[j] with fd[i] = −(y[i+1] − y[i]) / dt[i]."""
    if j == i:
        return c.rdt[i]
    if j == i + 1:
        return -c.rdt[i]
    return 0.0


cdef inline double _df(const Curve* c, int jn, int j) noexcept nogil:
    """∂f[jn]/∂y[j] through the (at most two) discrete forwards node forward jn depends on."""
    cdef int m = c.n - 1
    cdef int lo = _lo(jn, m)
    cdef double v = c.cl[jn] * _dfd(c, lo, j)
    if m > 1:
        v += c.cr[jn] * _dfd(c, lo + 1, j)
    return v


cdef void _derivative(const Curve* c, const Query* p, int* base, double* d) noexcept nogil:
    """∂ log P / ∂ y[base + i] into d[i], i < 4; the derivative in y[0] is left at 0.

    Monotone convex: per node log-DF, a complex step of size ``_STEP`` along that node's
    direction through the (four or fewer) quantities the query depends on, as the twin does
    for the whole curve. Where Hagan–West's g0, g1 are rounding noise (a flat stretch) the
    step is not small against them and the result is only as exact as the twin's; moving
    the same way keeps the two in agreement.
    """
    cdef int n = c.n
    cdef int m = n - 1
    cdef int k = p.k
    cdef int b = _base(k, n)
    cdef int i, j
    cdef double xl, h, g0, g1, dfd, dg
    cdef double complex z0, z1
    for i in range(_W):
        d[i] = 0.0
    base[0] = b
    if c.method == _LOG_LINEAR:
        # linear in (y[k], y[k+1]); past the last node the last interval is extended
        xl = (p.q - c.t[k]) / c.dt[k]
        d[k - b] += 1.0 - xl
        d[k + 1 - b] += xl
        return
    for i in range(_W):
        j = b + i
        if j < 1 or j >= n:
            continue
        if p.beyond:  # L = y[m] − f[m] (q − t[m])
            d[i] = (1.0 if j == m else 0.0) - _df(c, m, j) * (p.q - c.t[m])
            continue
        h = c.dt[k]
        dfd = _dfd(c, k, j)
        if p.x == 0.0 or p.x == 1.0:
            # ∫₀⁰ g = ∫₀¹ g = 0 whatever g0 and g1: on a node log P is that node's log-DF.
            # (A complex step can land on the wrong side of a switch point η = x that moves
            # with g, e.g. region (iv) with g1 = 0 at x = 0.)
            dg = 0.0
        else:
            g0 = c.f[k] - c.fd[k]
            g1 = c.f[k + 1] - c.fd[k]
            z0 = g0 + 1j * (_STEP * (_df(c, k, j) - dfd))
            z1 = g1 + 1j * (_STEP * (_df(c, k + 1, j) - dfd))
            dg = _g_integral(z0, z1, p.x).imag / _STEP
        # L = y[k] − h (fd[k] x + G(f[k] − fd[k], f[k+1] − fd[k], x))
        d[i] = (1.0 if j == k else 0.0) - h * (dfd * p.x + dg)


# ------------------------------------------------------------------------------------------
# dense LU with partial pivoting


cdef bint _lu_solve(double* a, double* rhs, int* perm, int m) noexcept nogil:
    """Solve ``a x = rhs`` in place (``a`` row-major m × m); False if a pivot is exactly 0."""
    cdef int i, j, r, p
    cdef double big, v, piv, tmp
    for j in range(m):
        p = j
        big = abs(a[j * m + j])
        for i in range(j + 1, m):
            v = abs(a[i * m + j])
            if v > big:
                big = v
                p = i
        if big == 0.0:
            return False
        perm[j] = p
        if p != j:
            for r in range(m):
                tmp = a[j * m + r]
                a[j * m + r] = a[p * m + r]
                a[p * m + r] = tmp
            tmp = rhs[j]
            rhs[j] = rhs[p]
            rhs[p] = tmp
        piv = a[j * m + j]
        for i in range(j + 1, m):
            v = a[i * m + j] / piv
            if v != 0.0:
                for r in range(j + 1, m):
                    a[i * m + r] -= v * a[j * m + r]
                rhs[i] -= v * rhs[j]
    for i in range(m - 1, -1, -1):
        v = rhs[i]
        for r in range(i + 1, m):
            v -= a[i * m + r] * rhs[r]
        rhs[i] = v / a[i * m + i]
    return True


# ------------------------------------------------------------------------------------------
# Python entry points


cdef void _check_nodes(const double[::1] node_t, Py_ssize_t n_logdf) except *:
    """Shapes only (O(1)): the kernels trust values, as the twin does."""
    if node_t.shape[0] < 2:
        raise ValueError("a curve needs at least two nodes")
    if n_logdf != node_t.shape[0]:
        raise ValueError(f"node_logdf has {n_logdf} entries for {node_t.shape[0]} nodes")


def interp_log_df(
    int method,
    const double[::1] node_t,
    const double[::1] node_logdf,
    const double[::1] query_t,
    double[::1] out,
):
    """Write log P(``query_t``) into ``out``; nodes start at ``(0, 0)``."""
    _check_nodes(node_t, node_logdf.shape[0])
    if out.shape[0] != query_t.shape[0]:
        raise ValueError(f"out has {out.shape[0]} entries for {query_t.shape[0]} query times")
    cdef int n = <int>node_t.shape[0]
    cdef Py_ssize_t nq = query_t.shape[0], i
    cdef double stack[_CURVE_WORDS * _STACK_NODES]
    cdef double* buf = stack
    cdef Curve c
    cdef Query p
    if n > _STACK_NODES:
        buf = <double*>malloc(_CURVE_WORDS * n * sizeof(double))
        if buf == NULL:
            raise MemoryError()
    _bind(&c, method, &node_t[0], n, buf)
    with nogil:
        _intervals(&c)
        _forwards(&c, &node_logdf[0], False)
        for i in range(nq):
            _locate(&c, query_t[i], &p)
            out[i] = _value(&c, &node_logdf[0], &p)
    if buf != stack:
        free(buf)


def interp_log_df_jacobian(
    int method,
    const double[::1] node_t,
    const double[::1] node_logdf,
    const double[::1] query_t,
    double[::1] out,
    double[:, ::1] jac,
):
    """log P at ``query_t`` and its Jacobian ``jac[k, j] = ∂ out[k] / ∂ node_logdf[j]``.

    Column 0 is zero: the first node is pinned at ``log P(0) = 0``.
    """
    _check_nodes(node_t, node_logdf.shape[0])
    if out.shape[0] != query_t.shape[0]:
        raise ValueError(f"out has {out.shape[0]} entries for {query_t.shape[0]} query times")
    if jac.shape[0] != query_t.shape[0] or jac.shape[1] != node_t.shape[0]:
        raise ValueError(
            f"jac has shape ({jac.shape[0]}, {jac.shape[1]}), "
            f"expected ({query_t.shape[0]}, {node_t.shape[0]})"
        )
    cdef int n = <int>node_t.shape[0]
    cdef Py_ssize_t nq = query_t.shape[0], i, j
    cdef int b
    cdef double d[_W]
    cdef double stack[_CURVE_WORDS * _STACK_NODES]
    cdef double* buf = stack
    cdef Curve c
    cdef Query p
    if n > _STACK_NODES:
        buf = <double*>malloc(_CURVE_WORDS * n * sizeof(double))
        if buf == NULL:
            raise MemoryError()
    _bind(&c, method, &node_t[0], n, buf)
    with nogil:
        _intervals(&c)
        _forwards(&c, &node_logdf[0], False)
        for i in range(nq):
            _locate(&c, query_t[i], &p)
            out[i] = _value(&c, &node_logdf[0], &p)
        _forwards(&c, &node_logdf[0], True)
        for i in range(nq):
            _locate(&c, query_t[i], &p)
            _derivative(&c, &p, &b, d)
            for j in range(n):
                jac[i, j] = 0.0
            for j in range(_W):
                if b + j < n:
                    jac[i, b + j] = d[j]
            jac[i, 0] = 0.0
    if buf != stack:
        free(buf)


def interp_log_df_rows(
    int method,
    const double[::1] node_t,
    const double[:, ::1] node_logdf,
    const double[::1] query_t,
    double[:, ::1] out,
):
    """Write log P(``query_t``) of the curve in each row of ``node_logdf`` (curves on the same
    node times) into the same row of ``out``; the query times are located once for all rows."""
    _check_nodes(node_t, node_logdf.shape[1])
    if out.shape[0] != node_logdf.shape[0] or out.shape[1] != query_t.shape[0]:
        raise ValueError(
            f"out has shape ({out.shape[0]}, {out.shape[1]}), "
            f"expected ({node_logdf.shape[0]}, {query_t.shape[0]})"
        )
    cdef int n = <int>node_t.shape[0]
    cdef Py_ssize_t nq = query_t.shape[0], rows = node_logdf.shape[0], i, r
    cdef double* buf = <double*>malloc(_CURVE_WORDS * n * sizeof(double))
    cdef Query* qs = <Query*>malloc(nq * sizeof(Query) + 1)
    cdef Curve c
    if buf == NULL or qs == NULL:
        free(buf)
        free(qs)
        raise MemoryError()
    _bind(&c, method, &node_t[0], n, buf)
    with nogil:
        _intervals(&c)
        for i in range(nq):
            _locate(&c, query_t[i], &qs[i])
        for r in range(rows):
            _forwards(&c, &node_logdf[r, 0], False)
            for i in range(nq):
                out[r, i] = _value(&c, &node_logdf[r, 0], &qs[i])
    free(buf)
    free(qs)

cdef struct Work:
    Query* qs  # nq located queries
    double* logp  # nq
    double* dv  # nq × 4 derivative windows
    int* base  # nq window starts
    double* e  # nt exponentials
    double* a  # m × m Newton matrix
    double* step  # m
    double* res  # m residuals
    int* perm  # m pivot rows


cdef int _newton(
    Curve* c,
    Work* wk,
    int nq,
    const double* query_t,
    const double* c0,
    const int64_t* ptr,
    const double* w,
    const int64_t* ta,
    const int64_t* tb,
    double* y,
    double tol,
    int max_iter,
) noexcept nogil:
    """Newton on ``y[1:]`` (in place). Returns iterations ≥ 0, −1 if singular, −2 if stuck."""
    cdef int m = c.n - 1
    cdef int it, i, j, col, bj
    cdef int64_t t
    cdef double s, worst, v, coef
    cdef bint bad
    cdef double* res = wk.res
    cdef double* e = wk.e
    cdef double* a = wk.a
    cdef double* dv = wk.dv
    for i in range(nq):
        _locate(c, query_t[i], &wk.qs[i])
    y[0] = 0.0
    for it in range(max_iter + 1):
        _forwards(c, y, False)
        for i in range(nq):
            wk.logp[i] = _value(c, y, &wk.qs[i])
        worst = 0.0
        bad = False
        for i in range(m):
            s = 0.0
            for t in range(ptr[i], ptr[i + 1]):
                e[t] = exp(wk.logp[ta[t]] - wk.logp[tb[t]])
                s += w[t] * e[t]
            res[i] = s + c0[i]
            v = abs(res[i])
            if v != v:
                bad = True
            elif v > worst:
                worst = v
        if not bad and worst <= tol:
            return it
        if it == max_iter:
            break
        # ∂R_i/∂y_j = Σ_t w_t e_t (∂L(a_t)/∂y_j − ∂L(b_t)/∂y_j) for j ≥ 1 (column j − 1)
        _forwards(c, y, True)
        for i in range(nq):
            _derivative(c, &wk.qs[i], &wk.base[i], &dv[_W * i])
        for i in range(m * m):
            a[i] = 0.0
        for i in range(m):
            for t in range(ptr[i], ptr[i + 1]):
                coef = w[t] * e[t]
                bj = wk.base[ta[t]]
                for j in range(_W):
                    col = bj + j - 1
                    if 0 <= col < m:
                        a[i * m + col] += coef * dv[_W * ta[t] + j]
                bj = wk.base[tb[t]]
                for j in range(_W):
                    col = bj + j - 1
                    if 0 <= col < m:
                        a[i * m + col] -= coef * dv[_W * tb[t] + j]
        for i in range(m):
            wk.step[i] = res[i]
        if not _lu_solve(a, wk.step, wk.perm, m):
            return -1
        for j in range(m):
            y[j + 1] -= wk.step[j]
    return -2


cdef struct Solver:
    Curve c
    Work wk
    double* y  # n node log-DFs being solved
    double* buf
    int* ibuf
    Query* qs


cdef void _check_system(
    int n, int nq, Py_ssize_t n_c0, const int64_t[::1] term_ptr, Py_ssize_t nt,
    const int64_t[::1] term_a, const int64_t[::1] term_b, int max_iter,
) except *:
    """The instruments' structure describes ``n − 1`` instruments over ``nq`` query times."""
    cdef int m = n - 1
    cdef Py_ssize_t i
    if max_iter < 0:
        raise ValueError(f"max_iter must be ≥ 0, not {max_iter}")
    if n_c0 != m or term_ptr.shape[0] != n:
        raise ValueError(
            f"{n} nodes need {m} instruments: c0 has {n_c0} entries, "
            f"term_ptr {term_ptr.shape[0]} (expected {n})"
        )
    if term_a.shape[0] != nt or term_b.shape[0] != nt or term_ptr[0] != 0 or term_ptr[m] != nt:
        raise ValueError("term_ptr, term_w, term_a and term_b do not describe the same terms")
    for i in range(m):
        if term_ptr[i + 1] <= term_ptr[i]:
            raise ValueError(f"instrument {i} has no terms")
    for i in range(nt):
        if not (0 <= term_a[i] < nq and 0 <= term_b[i] < nq):
            raise ValueError(f"term {i} refers to a query time outside 0..{nq - 1}")


cdef void _open_solver(
    Solver* sv, int method, const double* node_t, int n, int nq, int nt
) except *:
    """Scratch for Newton solves on one set of nodes (freed by :func:`_close_solver`)."""
    cdef int m = n - 1
    # one block of doubles: y | curve scratch | res, step | logp, dv | e | a
    cdef Py_ssize_t words = (1 + _CURVE_WORDS) * n + 2 * m + (1 + _W) * nq + nt + m * m
    sv.buf = <double*>malloc(words * sizeof(double))
    sv.ibuf = <int*>malloc((nq + m) * sizeof(int))
    sv.qs = <Query*>malloc(nq * sizeof(Query) + 1)
    if sv.buf == NULL or sv.ibuf == NULL or sv.qs == NULL:
        _close_solver(sv)
        raise MemoryError()
    sv.y = sv.buf
    _bind(&sv.c, method, node_t, n, sv.buf + n)
    sv.wk.res = sv.buf + (1 + _CURVE_WORDS) * n
    sv.wk.step = sv.wk.res + m
    sv.wk.logp = sv.wk.step + m
    sv.wk.dv = sv.wk.logp + nq
    sv.wk.e = sv.wk.dv + _W * nq
    sv.wk.a = sv.wk.e + nt
    sv.wk.qs = sv.qs
    sv.wk.base = sv.ibuf
    sv.wk.perm = sv.ibuf + nq
    _intervals(&sv.c)


cdef void _close_solver(Solver* sv) noexcept:
    free(sv.buf)
    free(sv.ibuf)
    free(sv.qs)
    sv.buf = NULL
    sv.ibuf = NULL
    sv.qs = NULL


def bootstrap(
    int method,
    const double[::1] node_t,
    const double[::1] query_t,
    const double[::1] c0,
    const int64_t[::1] term_ptr,
    const double[::1] term_w,
    const int64_t[::1] term_a,
    const int64_t[::1] term_b,
    double[::1] logdf,
    double tol,
    int max_iter,
):
    """Newton solve of the instruments' residuals for ``logdf[1:]`` (in place, warm start).

    Instrument ``i`` pins node ``i + 1``; its residual is
    ``c0[i] + Σ_t term_w[t] · exp(L(query_t[term_a[t]]) − L(query_t[term_b[t]]))``.
    Returns the iterations used; raises ValueError if the residuals stay above ``tol``.
    """
    _check_nodes(node_t, logdf.shape[0])
    cdef int n = <int>node_t.shape[0]
    cdef int m = n - 1
    cdef int nq = <int>query_t.shape[0]
    cdef int nt = <int>term_w.shape[0]
    cdef int i, status
    cdef Solver sv
    _check_system(n, nq, c0.shape[0], term_ptr, nt, term_a, term_b, max_iter)
    _open_solver(&sv, method, &node_t[0], n, nq, nt)
    for i in range(n):
        sv.y[i] = logdf[i]
    with nogil:
        status = _newton(
            &sv.c, &sv.wk, nq, &query_t[0], &c0[0], &term_ptr[0], &term_w[0], &term_a[0],
            &term_b[0], sv.y, tol, max_iter,
        )
        if status >= 0:
            for i in range(n):
                logdf[i] = sv.y[i]
    residuals = [sv.wk.res[i] for i in range(m)]
    _close_solver(&sv)
    if status >= 0:
        return status
    if status == -1:
        raise ValueError("bootstrap Jacobian is singular: two instruments pin the same node")
    worst_i = _argmax_abs(residuals)
    raise ValueError(
        f"bootstrap did not converge in {max_iter} iterations: "
        f"instrument {worst_i} residual {residuals[worst_i]:.3e}"
    )


def bootstrap_rows(
    int method,
    const double[::1] node_t,
    const double[::1] query_t,
    const double[:, ::1] c0,
    const int64_t[::1] term_ptr,
    const double[:, ::1] term_w,
    const int64_t[::1] term_a,
    const int64_t[::1] term_b,
    double[:, ::1] logdf,
    double tol,
    int max_iter,
    int64_t[::1] status,
):
    """:func:`bootstrap` of each row: instruments of one structure (``term_ptr``, ``term_a``,
    ``term_b``) with the coefficients ``c0[r]``, ``term_w[r]``, solved from ``logdf[r]`` in
    place. No row raises: ``status[r]`` is its iterations, −1 for a singular Jacobian, −2
    when the residuals stay above ``tol``; such a row's ``logdf`` is left as it was."""
    _check_nodes(node_t, logdf.shape[1])
    cdef Py_ssize_t rows = logdf.shape[0], r
    if c0.shape[0] != rows or term_w.shape[0] != rows or status.shape[0] != rows:
        raise ValueError(
            f"{rows} rows of logdf: c0 has {c0.shape[0]}, term_w {term_w.shape[0]}, "
            f"status {status.shape[0]}"
        )
    cdef int n = <int>node_t.shape[0]
    cdef int nq = <int>query_t.shape[0]
    cdef int nt = <int>term_w.shape[1]
    cdef int i, done
    cdef Solver sv
    _check_system(n, nq, c0.shape[1], term_ptr, nt, term_a, term_b, max_iter)
    if rows == 0:
        return
    _open_solver(&sv, method, &node_t[0], n, nq, nt)
    with nogil:
        for r in range(rows):
            for i in range(n):
                sv.y[i] = logdf[r, i]
            done = _newton(
                &sv.c, &sv.wk, nq, &query_t[0], &c0[r, 0], &term_ptr[0], &term_w[r, 0],
                &term_a[0], &term_b[0], sv.y, tol, max_iter,
            )
            status[r] = done
            if done >= 0:
                for i in range(n):
                    logdf[r, i] = sv.y[i]
    _close_solver(&sv)


def _argmax_abs(values):
    """Index of the largest |value|, the first NaN if any (as ``np.argmax(np.abs(.))``)."""
    best = 0
    for i, v in enumerate(values):
        if v != v:
            return i
        if abs(v) > abs(values[best]):
            best = i
    return best
