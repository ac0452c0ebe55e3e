"""The Rician (or Gaussian) log-likelihood of every voxel at every grid point as one matrix product: the
engine of ``fit_bayes`` (ratio and S0-marginal posteriors alike).

``log I0e`` is interpolated per b-value in a few Chebyshev pieces so that the likelihood of n voxels on
G grid points is ``(n, F) @ (F, G)`` with F about 50; the posterior sums run over blocks of the grid
with a running maximum (online softmax).
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["BLOCK", "GridLikelihood", "log_i0e"]


#: Largest log-likelihood error the interpolated log I0e may add, summed over b-values.
_LOGLIK_TOL = 1e-6
#: Longest stretch of log(m + a) one interpolation polynomial covers before it is split.
_PIECE = 2.5
#: Most nodes per piece before the piece is split in two.
_MAX_NODES = 24
#: float32 is used when 2^-24 times the largest Gaussian log-likelihood terms over the grid is below
#: this (sigma >~ 0.015 with PARAMETER_BOX); the posterior means then stay within 4e-6 of the float64
#: ones, relative to each parameter's largest value (the grid holds a parameter in units of its box, so
#: its rounding is that of the box's scale: a small Dp moves by up to 1.2e-5 of its own value on a 16^3
#: grid). Measured at sigma 0.02-0.2 on an AVX-512 CPU under MKL's default, COMPATIBLE and AVX2 paths
#: and ATen's default kernels (largest at sigma 0.02, where float32's rounding of the log-likelihood
#: dominates; at low SNR each block's float32 sum of weights, about 6e-7).
_F32_ROUNDING = 2e-4
#: Grid points per block of the posterior sums.
BLOCK = 4096
# The posterior sums across blocks (and their running maximum) are float64 whatever the posterior's
# dtype: summed in float32 they erred by up to 3e-5 (relative) in the posterior mean at low SNR on every
# numeric path tried (the running sums are rescaled and added to once per block, 16 times at the default
# grid). In float64 only each block's own float32 sum of <= BLOCK weights is rounded (about 5e-7).


def log_i0e(z):
    """log I0e(z) = log(I0(z) exp(-z)), float64, z >= 0."""
    from scipy.special import i0e

    return np.log(i0e(z))


def _chebyshev(lo, hi, k):
    """k Chebyshev points of the first kind on [lo, hi] and their barycentric weights."""
    j = np.arange(k)
    angle = (2 * j + 1) * np.pi / (2 * k)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos(angle), (-1.0) ** j * np.sin(angle)


def _lagrange(nodes, weights, t):
    """Lagrange basis at points t (n,) for the nodes: (n, k), rows summing to 1 (barycentric form)."""
    d = t[:, None] - nodes[None, :]
    hit = d == 0
    d[hit] = 1.0
    basis = weights / d
    basis /= basis.sum(axis=1, keepdims=True)
    rows = hit.any(axis=1)
    basis[rows] = hit[rows]
    return basis


def _pieces(lo, hi, x_test, shift, sigma2, tol):
    """Interpolation pieces [(lo, hi, nodes, weights)] of t = log(m + shift) covering [lo, hi].

    On each piece ``log I0e(x m / sigma^2)`` is interpolated in t with the fewest
    Chebyshev nodes that keep the error below ``tol`` for every test signal x
    (checked on a fine set of t). As a function of t, log I0e(x m / sigma^2) is
    analytic in a strip around the real axis whose width does not depend on x
    (the zeros of I0 lie on the imaginary axis), so a few nodes suffice for all
    voxels alike.
    """
    if hi - lo > _PIECE:
        mid = (lo + hi) / 2
        return _pieces(lo, mid, x_test, shift, sigma2, tol) + _pieces(mid, hi, x_test, shift, sigma2, tol)
    if hi - lo < 1e-12:
        return [(lo, hi, np.array([lo]), np.ones(1))]
    t = np.linspace(lo, hi, 257)
    exact = log_i0e(x_test[:, None] * (np.exp(t) - shift)[None, :] / sigma2)
    for k in range(2, _MAX_NODES + 1):
        nodes, weights = _chebyshev(lo, hi, k)
        at_nodes = log_i0e(x_test[:, None] * (np.exp(nodes) - shift)[None, :] / sigma2)
        if np.abs(at_nodes @ _lagrange(nodes, weights, t).T - exact).max() <= tol:
            return [(lo, hi, nodes, weights)]
    mid = (lo + hi) / 2
    return _pieces(lo, mid, x_test, shift, sigma2, tol) + _pieces(mid, hi, x_test, shift, sigma2, tol)


class GridLikelihood:
    """Grid-side half of the log-likelihood matrix product, built once per ``fit_bayes`` call.

    Up to terms constant per voxel, the Rician log-likelihood of normalised
    signals x (n, n_b') at models m (n_b', G) is

        sum_b [ (x_b - c_b)(m_b - c_b) / sigma^2 - (m_b - c_b)^2 / (2 sigma^2) + log I0e(x_b m_b / sigma^2) ]

    (c_b the grid mean of m_b, which keeps the Gaussian terms small). The
    Gaussian part is a product of voxel features (x_b - c_b)/sigma^2, 1 with
    grid features m_b - c_b, -|m - c|^2/(2 sigma^2). log I0e(x_b m_b/sigma^2) is
    Lagrange-interpolated in t = log(m_b + a_b) (a_b = 0.1 sigma^2 / max x_b)
    from its exact values at a few nodes m_bk: voxel features
    log I0e(x_b m_bk / sigma^2), grid features the Lagrange weights. So the
    whole log-likelihood is one matrix product (n, F) @ (F, G) (F about 50 for
    the seed's b-values), in float32 unless the SNR is so high that its rounding
    of the Gaussian terms could matter (``_F32_ROUNDING``), else in float64.
    """

    def __init__(self, m, theta, sigma, x_range, *, block=BLOCK, scale2=1.0, offset=False, rician=True, pool=None):
        # block: grid points per block; scale2: largest squared S0 the voxel features are scaled by
        # (``features(x, s2)``, for the S0-marginal posterior); offset: one more grid feature row of
        # ones, paired with a per-row constant the voxel features end with. pool: a thread pool (``map``)
        # that builds the rows of the b-values side by side.
        import torch

        # rician=False: the Gaussian log-likelihood -(x_b - m_b)^2 / (2 sigma^2) (real-valued data), which
        # is the Gaussian part alone: log I0(z) is replaced by z, i.e. log I0e by 0
        self.sigma2, self.rician = sigma**2, bool(rician)
        n_b = len(m)
        self.c = m.mean(axis=1)
        dm = m - self.c[:, None]
        self.nodes = []  # per b: node model values (k,), for the voxel features
        # float32 unless its rounding of the largest Gaussian terms could matter (high SNR)
        rounding = 2.0**-24 * 2 * (np.abs(dm).max(axis=1) ** 2).sum() * scale2 / self.sigma2
        self.dtype = torch.float32 if rounding <= _F32_ROUNDING else torch.float64
        as_numpy = np.float32 if self.dtype == torch.float32 else np.float64

        def bessel_pieces(j):
            """The interpolation pieces of b-value j, and each grid point's piece (none when not needed)."""
            x_lo, x_hi = x_range[:, j]
            if x_hi <= 0 or not self.rician:  # log I0e(0) = 0 for every grid point (or no Bessel term at all)
                return None
            shift = 0.1 * self.sigma2 / x_hi
            t = np.log(m[j] + shift)
            x_test = np.unique(np.append(np.geomspace(max(x_lo, 1e-6 * x_hi), x_hi, 48), x_hi))
            pieces = _pieces(t.min(), t.max(), x_test, shift, self.sigma2, _LOGLIK_TOL / n_b)
            owner = np.searchsorted(np.array([p[1] for p in pieces[:-1]]), t)  # each grid point in one piece
            return t, shift, pieces, owner

        # the b-values are independent: side by side in ``pool`` (numpy releases the GIL in the large steps)
        run = pool.map if pool is not None else map
        per_b = list(run(bessel_pieces, range(n_b)))
        # rows: dm (n_b), -|dm|^2 / (2 sigma^2), the Lagrange weights of every piece, [ones]; written once, in
        # the posterior's dtype, straight into the matrix
        starts, row = [], n_b + 1
        for j, found in enumerate(per_b):
            starts.append(row)
            for _, _, nodes, _ in found[2] if found else ():
                self.nodes.append((j, np.exp(nodes) - found[1]))
                row += len(nodes)
        M = np.zeros((row + bool(offset), m.shape[1]), dtype=as_numpy)
        M[:n_b] = dm
        M[n_b] = -(dm**2).sum(axis=0) / (2 * self.sigma2)
        if offset:
            M[row] = 1.0

        def fill(j):
            if per_b[j] is None:
                return
            t, _, pieces, owner = per_b[j]
            r = starts[j]
            for i, (_, _, nodes, weights) in enumerate(pieces):
                inside = owner == i
                M[r : r + len(nodes), inside] = _lagrange(nodes, weights, t[inside]).T
                r += len(nodes)

        list(run(fill, range(n_b)))  # disjoint rows per b-value
        span = np.array([theta.min(axis=0), theta.max(axis=0)])
        self.theta_lo, self.theta_scale = span[0], np.where(span[1] > span[0], span[1] - span[0], 1.0)
        unit = (theta - self.theta_lo) / self.theta_scale  # grid in [0, 1]: uniform float32 precision
        theta1 = np.concatenate([unit, np.ones((len(theta), 1))], axis=1).astype(as_numpy)
        # grid blocks small enough for the (chunk, block) log-likelihood to stay in cache: views of M (rows
        # G apart, each block's columns contiguous: a matrix BLAS reads as it is)
        self.blocks = [(torch.from_numpy(M[:, i : i + block]), torch.from_numpy(theta1[i : i + block]))
                       for i in range(0, M.shape[1], block)]
        self._local = threading.local()  # one log-likelihood buffer per worker thread

    def features(self, x, s2=None, offset=None):
        """Voxel features (n, F) for normalised signals x (n, n_b').

        With ``s2`` (n,), rows for x = S0 y (y in signal units) whose Gaussian
        terms carry S0^2 = s2: features (x - s2 c)/sigma^2 and s2 (see
        ``posterior``), and ``offset`` (n,) the per-row constant paired with
        the ones row of a posterior built with ``offset=True``.
        """
        if s2 is None:
            cols = [(x - self.c) / self.sigma2, np.ones((len(x), 1))]
        else:
            cols = [(x - s2[:, None] * self.c) / self.sigma2, s2[:, None]]
        cols += [log_i0e(x[:, j : j + 1] * nodes[None, :] / self.sigma2) for j, nodes in self.nodes]
        if offset is not None:
            cols.append(offset[:, None])
        return np.concatenate(cols, axis=1)

    def mean(self, x):
        """Posterior means (n, 3) of (Dp, Dt, Fp) for normalised signals x (n, n_b').

        Runs over the grid in blocks with a running maximum of the
        log-likelihood (online softmax): weights exp(loglik - max) summed with
        and without theta, rescaled whenever the maximum grows.
        """
        import torch

        X = torch.from_numpy(self.features(x)).to(self.dtype)
        n = len(x)
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < n * BLOCK:
            buffer = self._local.buffer = torch.empty(n * BLOCK, dtype=self.dtype)
        # running maximum and sums across blocks in float64 (see BLOCK); a block's own log-likelihoods,
        # weights and weighted sum in the posterior's dtype
        top = torch.full((n, 1), -torch.inf, dtype=torch.float64)
        sums = torch.zeros((n, 4), dtype=torch.float64)
        for M, theta1 in self.blocks:
            loglik = torch.matmul(X, M, out=buffer[: n * M.shape[1]].view(n, M.shape[1]))
            new_top = torch.maximum(top, loglik.amax(dim=1, keepdim=True).double())
            sums *= torch.exp(top - new_top)
            # below exp(-80) a weight is negligible (< 1e-30 of the largest); clamping avoids slow subnormals
            weights = loglik.sub_(new_top.to(self.dtype)).clamp_(min=-80.0).exp_()
            sums += (weights @ theta1).double()
            top = new_top
        sums = sums.numpy()
        return self.theta_lo + self.theta_scale * sums[:, :3] / sums[:, 3:]
