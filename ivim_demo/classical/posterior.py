"""The exact IVIM posterior with S0 unknown: ``fit_bayes(..., s0="marginal")``, the default.

The likelihood is Rician in every sample, b = 0 included, in signal units;
S0 is a nuisance parameter with a uniform prior on S0 > 0, integrated out
numerically on a per-voxel grid of S0 values (the trapezoidal rule, exact to
about 2e-6 relative: see ``_S0_STEP``), widened until the posterior at its
ends is negligible. The posterior over (Dp, Dt, Fp) is the
same grid of cell centres as ``fit_bayes(..., s0="ratio")``. Reached through
``fit_bayes`` (its default mode); this module holds the machinery and the ``Posterior`` result.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .likelihood import log_i0e
from ..core.signal_model import IVIMParams

__all__ = ["Posterior", "MarginalPass", "MAX_WIDEN", "edges_needing_room", "s0_nodes", "s0_step", "s0_summaries",
           "s0_windows", "summaries", "unit_models"]


class Posterior(NamedTuple):
    """Posterior summaries per voxel, each an ``IVIMParams`` shaped like the voxels.

    Attributes
    ----------
    mean : IVIMParams
        Posterior means (Dp, Dt in mm^2/s, Fp a fraction, S0 in signal units).
    sd : IVIMParams
        Posterior standard deviations, same units.
    lower, upper : IVIMParams
        Ends of the central credible interval at the requested level: the
        (1 - level)/2 and (1 + level)/2 quantiles of each parameter's marginal
        posterior.
    """

    mean: IVIMParams
    sd: IVIMParams
    lower: IVIMParams
    upper: IVIMParams


#: S0 node spacing in units of the narrowest conditional posterior SD of S0 given (Dp, Dt, Fp),
#: sigma / max |m(theta)|. For a Gaussian of SD s the trapezoidal rule with spacing h errs by
#: 2 exp(-2 pi^2 s^2 / h^2) (relative) at most, wherever the nodes fall: 2e-6 at h = 1.2 s.
_S0_STEP = 1.2
#: The first S0 window covers the conditional maxima S0*(theta) of every theta whose Gaussian
#: profile log-likelihood is within this much of the best one (a posterior weight e^-20 = 2e-9) ...
_PROFILE_DROP = 20.0
#: ... plus this many conditional SDs on either side (Gaussian tail beyond: 3e-7).
_S0_TAIL = 5.0
#: A window is widened (and its voxel fitted again) while its S0 posterior at an end node exceeds
#: this fraction of its largest node: then less than about 1e-7 of the mass lies outside.
_S0_EDGE = 1e-7
#: Widening rounds before giving up (each adds half the window on the side that needs it).
MAX_WIDEN = 8


def s0_step(m_full, sigma):
    """Spacing (signal units) of the S0 nodes for models m_full (n_b, G)."""
    return _S0_STEP * sigma / np.sqrt((m_full**2).sum(axis=0)).max()


def s0_windows(y, mhat, inv_norm, sigma):
    """First S0 window [lo, hi] per voxel (signal units) from the Gaussian profile likelihood.

    For each theta of the grid (``mhat``: the models of all b-values scaled
    to unit norm, ``inv_norm``: 1 / |m|; see ``unit_models``), the Gaussian
    part of the log-likelihood, maximised over S0, is u^2 / (2 sigma^2) with
    u = y . m / |m|, at S0*(theta) = u / |m|; the conditional SD of S0 is
    sigma / |m|. The window spans S0* +- ``_S0_TAIL``
    conditional SDs over the thetas within ``_PROFILE_DROP`` of the best.
    The rest of the log-likelihood, sum_b log I0e(y_b S0 m_b / sigma^2) <= 0,
    differs between thetas by a few units at most (about
    0.5 sum_b log(m_b(theta1) / m_b(theta2)) at high SNR), so every theta within
    ``_PROFILE_DROP`` minus a few of the best full likelihood is covered; a
    posterior that is continuous in S0 and reaches past the window is caught
    by ``edges_needing_room`` and widened.
    """
    import torch

    scale = float(np.abs(y).max())  # float32 on y / scale: the window only has to be about right
    u = (torch.from_numpy(y / scale).float() @ mhat).mul_(scale)  # (n, G)
    top = u.amax(dim=1, keepdim=True)
    drop = ~(u >= torch.sqrt(torch.clamp(top.double() ** 2 - 2 * sigma**2 * _PROFILE_DROP, min=0.0)).float())
    lo = (u - _S0_TAIL * sigma).mul_(inv_norm).masked_fill_(drop, np.inf).amin(dim=1)
    hi = u.add_(_S0_TAIL * sigma).mul_(inv_norm).masked_fill_(drop, -np.inf).amax(dim=1)
    return lo.double().numpy(), hi.double().numpy()


def unit_models(m_full):
    """Models scaled to unit norm and the inverse norms (torch, float32), for ``s0_windows``."""
    import torch

    norm = np.sqrt((m_full**2).sum(axis=0))
    return torch.from_numpy(m_full / norm).float(), torch.from_numpy(1 / norm).float()


def s0_nodes(lo, hi, h):
    """Nodes lo_v + h k (k = 0 .. K_v - 1) covering [lo_v, hi_v], all > 0 (the prior's S0 > 0).

    Returns the first node per voxel (n,) and the node counts (n,).
    """
    first = np.maximum(lo, h / 2)
    count = np.floor((hi - first) / h).astype(int) + 1
    return first, np.maximum(count, 2)


class MarginalPass:
    """One S0-marginal posterior evaluation on a fixed grid, for voxels with given S0 nodes.

    Built once per call and window round: ``post`` is a ``likelihood.GridLikelihood``
    over the b > 0 models with an offset row, block-aligned with whole Dp
    slices of the grid, so each block's weights sum to the marginals of Dp,
    Dt and Fp by reshaping.
    """

    def __init__(self, post, grid, sigma, h):
        self.post, self.grid, self.sigma2, self.h = post, grid, sigma**2, h
        self.slice = grid[1] * grid[2]
        # every _PROBE-th grid point: a first look at each voxel's largest log-likelihood
        self.probe = [M[:, ::_PROBE].contiguous() for M, _ in post.blocks]

    def run(self, y, first, count):
        """Marginal posterior weights for voxels y (n, n_b) in signal units.

        Returns unnormalised marginals over the Dp, Dt, Fp cells (n, grid[i])
        and over each voxel's S0 nodes (n, max count), float64.

        The weights are exp(log-likelihood - r) with r per voxel the largest
        log-likelihood over a sparse subset of the grid, folded into the
        features. Where the full grid exceeds r by more than ``_ABOVE_PROBE``
        (weights could overflow or be clamped), the voxels are summed again
        with a running maximum instead (online softmax, rescaling as it grows).
        """
        import torch

        post, s2c = self.post, self.sigma2
        n = len(y)
        owner = np.repeat(np.arange(n), count)  # voxel of each (voxel, S0 node) row
        k = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
        s = first[owner] + self.h * k
        c = post.c
        yb = y[owner, 1:]
        # per-row terms that do not depend on (Dp, Dt, Fp): the b = 0 sample and the grid-mean part
        const = ((s * (yb @ c) - s**2 * (c @ c) / 2) + s * y[owner, 0] - s**2 / 2) / s2c
        if post.rician:
            const += log_i0e(s * y[owner, 0] / s2c)
        best = np.full(n, -np.inf)
        np.maximum.at(best, owner, const)
        X = torch.from_numpy(post.features(s[:, None] * yb, s**2, const - best[owner])).to(post.dtype)
        idx = torch.from_numpy(owner)
        probe = torch.cat([X @ M for M in self.probe], dim=1).amax(dim=1)
        ref = torch.full((n,), -torch.inf, dtype=post.dtype).scatter_reduce(0, idx, probe, "amax")
        X[:, -1] -= ref[idx]
        out = self._sums(X, idx, n, online=False)
        if not all(torch.isfinite(v).all() for v in out) or out[0].max() > np.exp(_ABOVE_PROBE):
            out = self._sums(X, idx, n, online=True)
        s0 = np.zeros((n, count.max()))
        s0[owner, k] = out[0].numpy()
        return (*(v.numpy() for v in out[1:]), s0)

    def _sums(self, X, idx, n, online):
        """Weights summed per S0 row and per voxel over the Dp, Dt and Fp cells."""
        import torch

        dtype, acc = self.post.dtype, torch.float64  # sums across blocks in float64 (see likelihood.BLOCK)
        top = torch.full((n,), -torch.inf, dtype=acc)
        rows = torch.zeros(len(X), dtype=acc)
        dp = torch.zeros((n, self.grid[0]), dtype=acc)
        dt = torch.zeros((n, self.grid[1]), dtype=acc)
        fp = torch.zeros((n, self.grid[2]), dtype=acc)
        start = 0
        for M, _ in self.post.blocks:
            loglik = X @ M  # (rows, block)
            if online:
                new_top = torch.maximum(top, torch.full((n,), -torch.inf, dtype=acc).scatter_reduce(
                    0, idx, loglik.amax(dim=1).double(), "amax"))
                scale = torch.exp(top - new_top)
                for a in (dp, dt, fp):
                    a *= scale[:, None]
                rows *= scale[idx]
                loglik.sub_(new_top[idx, None].to(dtype))
                top = new_top
            # below exp(-80) a weight is negligible (< 1e-30 of the largest); clamping avoids slow subnormals
            weights = loglik.clamp_(min=-80.0).exp_()
            rows += weights.sum(dim=1).double()
            cube = torch.zeros((n, M.shape[1]), dtype=dtype).index_add_(0, idx, weights)
            cube = cube.view(n, -1, self.grid[1], self.grid[2])
            i = start // self.slice
            dp[:, i : i + cube.shape[1]] = cube.sum(dim=(2, 3)).double()
            dt += cube.sum(dim=(1, 3)).double()
            fp += cube.sum(dim=(1, 2)).double()
            start += M.shape[1]
        return rows, dp, dt, fp


#: Grid stride of the first look at each voxel's largest log-likelihood.
_PROBE = 7
#: How far (log units) the full grid's largest log-likelihood may exceed the first look's before the
#: voxels are summed again with a running maximum (float32 overflows at exp(88)).
_ABOVE_PROBE = 40.0


def edges_needing_room(s0, first, count, h):
    """Which voxels' S0 windows must grow at the low / high end: (n,) bool each."""
    rows = np.arange(len(s0))
    peak = s0.max(axis=1)
    low = (s0[:, 0] > _S0_EDGE * peak) & (first > h / 2)  # at S0 -> 0 the prior ends the window
    high = s0[rows, count - 1] > _S0_EDGE * peak
    return low, high


def summaries(p, centres, edges, level):
    """Mean, SD and central interval of per-voxel marginals p (n, N) over cells.

    ``centres`` (N,) or (n, N); ``edges`` (N + 1,) or (n, N + 1). The mean and
    SD are those of the cell centres weighted by p; the interval ends are
    quantiles of the piecewise-linear CDF that spreads each cell's mass
    uniformly over the cell (0 at the first edge, 1 at the last).
    """
    p = p / p.sum(axis=1, keepdims=True)
    mean = (p * centres).sum(axis=1)
    sd = np.sqrt(np.maximum((p * (centres - mean[:, None]) ** 2).sum(axis=1), 0.0))
    if level is None:
        return mean, sd, None, None
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    edges = np.broadcast_to(edges, cdf.shape)
    rows = np.arange(len(p))
    ends = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        k = np.clip((cdf < q).sum(axis=1), 1, p.shape[1])  # first edge where the CDF reaches q
        below, above = cdf[rows, k - 1], cdf[rows, k]
        t = np.clip((q - below) / np.where(above > below, above - below, 1.0), 0.0, 1.0)
        ends.append(edges[rows, k - 1] + t * (edges[rows, k] - edges[rows, k - 1]))
    return mean, sd, ends[0], ends[1]


def s0_summaries(p, first, h, level):
    """Mean, SD and central interval of S0 from its posterior p (n, K) at nodes first + h k.

    The nodes sample a smooth density finely (spacing below its SD), so the
    sums are the trapezoidal rule (as accurate as the marginalisation itself)
    and the CDF is that of the density's band-limited (sinc) interpolation,

    .. math:: F(x) = \\sum_k w_k \\left[\\tfrac12 + \\mathrm{Si}(\\pi (x - s_k)/h)/\\pi\\right],

    whose quantiles are found by Newton steps from the piecewise-linear ones:
    unlike cell-based quantiles they do not depend on where the nodes fall.
    """
    from scipy.special import sici

    centres = first[:, None] + h * np.arange(p.shape[1])
    edges = np.concatenate([centres - h / 2, centres[:, -1:] + h / 2], axis=1)
    mean, sd, lower, upper = summaries(p, centres, edges, level)
    if level is None:
        return mean, sd, None, None
    w = p / p.sum(axis=1, keepdims=True)
    ends = []
    for q, x in (((1 - level) / 2, lower), ((1 + level) / 2, upper)):
        for _ in range(_NEWTON):
            d = (x[:, None] - centres) / h
            cdf = (w * (0.5 + sici(np.pi * d)[0] / np.pi)).sum(axis=1)
            density = (w * np.sinc(d)).sum(axis=1) / h
            x = x - np.clip((cdf - q) / np.maximum(density, 1e-300), -h, h)
        ends.append(x)
    return mean, sd, ends[0], ends[1]


#: Newton steps of the S0 quantiles (from an error of about 0.1 SD, quadratic convergence).
_NEWTON = 4


def _brute_force(signals, b_values, sigma, box, grid, *, level=0.9, step=1 / 6, half_width=10.0, nodes_at_once=8):
    """Slow, obviously correct reference for ``fit_bayes(..., s0="marginal", interval=level)``.

    The full Rician log-likelihood of every sample (b = 0 included, signal
    units; ``scipy.special.i0e`` in log space) on the fit's (Dp, Dt, Fp) cell
    centres times a fine S0 grid (spacing ``step`` sigma, ``half_width``
    sigma either side of the measured S(b=0), S0 > 0; uniform priors), one
    voxel at a time.

    Returns a dict of (n, 4) arrays ``mean``, ``sd``, ``lower``, ``upper`` for
    (Dp, Dt, Fp, S0) (interval ends from the cell-uniform CDF on every axis)
    and ``edge`` (n,): the S0 marginal at the ends of its grid relative to its
    peak, which must be negligible for the reference to hold.
    """
    from scipy.special import i0e

    from ..core.signal_model import ivim

    b = np.asarray(b_values, float)
    keys = ("Dp", "Dt", "Fp")
    axes = [np.linspace(*box[k], n + 1) for k, n in zip(keys, grid)]
    centres = [(a[:-1] + a[1:]) / 2 for a in axes]
    theta = np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, 3)
    m = ivim(b, theta[:, :1], theta[:, 1:2], theta[:, 2:3])  # (G, n_b)
    out = {"mean": [], "sd": [], "lower": [], "upper": [], "edge": []}
    for y in np.asarray(signals, float).reshape(-1, len(b)):  # deliberately per voxel: the slow reference
        s0 = y[0] + sigma * np.arange(-half_width, half_width + step / 2, step)
        s0 = s0[s0 > 0]
        ll = np.empty((len(s0), len(theta)))
        for i in range(0, len(s0), nodes_at_once):
            mu = s0[i : i + nodes_at_once, None, None] * m[None]  # (k, G, n_b)
            z = y * mu / sigma**2
            # log p(y|mu) = log(y / sigma^2) - (y^2 + mu^2) / (2 sigma^2) + log I0(z); the first term
            # does not depend on the parameters (and is -inf for a sample y = 0): left out
            ll[i : i + nodes_at_once] = (-(y**2 + mu**2) / (2 * sigma**2) + np.log(i0e(z)) + z).sum(axis=-1)
        w = np.exp(ll - ll.max())  # (K, G)
        w /= w.sum()
        ps = w.sum(axis=1)
        out["edge"].append(max(ps[0], ps[-1]) / ps.max())
        pt = w.sum(axis=0).reshape(grid)
        marg = [pt.sum(axis=(1, 2)), pt.sum(axis=(0, 2)), pt.sum(axis=(0, 1)), ps]
        values = [*centres, s0]
        edges = [*axes, np.append(s0 - step * sigma / 2, s0[-1] + step * sigma / 2)]
        mean = [p @ v for p, v in zip(marg, values)]
        out["mean"].append(mean)
        out["sd"].append([np.sqrt(p @ (v - c) ** 2) for p, v, c in zip(marg, values, mean)])
        cdfs = [np.concatenate([[0], np.cumsum(p)]) for p in marg]
        out["lower"].append([np.interp((1 - level) / 2, c, e) for c, e in zip(cdfs, edges)])
        out["upper"].append([np.interp((1 + level) / 2, c, e) for c, e in zip(cdfs, edges)])
    return {k: np.array(v) for k, v in out.items()}
