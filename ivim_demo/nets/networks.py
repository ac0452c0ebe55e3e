"""IVIM-NET: networks that map a normalised DWI signal to IVIM parameters.

The networks are *unsupervised* and physics-informed: the encoder (fully
connected layers) predicts ``(Dp, Dt, Fp)`` and a fixed decoder, the IVIM
equation itself, turns them back into a signal.  Training minimises the
difference between that reconstruction and the measured signal, so no
ground-truth parameters are ever needed (Barbieri et al., MRM 2020).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

from ..core.checks import check_b_values, check_box
from ..core.signal_model import FIT_BOUNDS, IVIMParams, ivim

__all__ = ["IVIMNet", "IVIMNetOptim", "IVIMNetUncertainty", "UNCERTAINTY_SNR_RANGE", "noise_input", "check_sigma", "check_snr_range",
           "uncertainty_heads"]


class IVIMNet(nn.Module):
    """The seed's IVIM-NET (IVIM-NET_orig).

    Input: the normalised signal ``S(b)/S(b=0)`` at the b-values > 0 (the
    b = 0 column is 1 after normalisation, so it carries no information).
    Three hidden layers ``Linear(n_b-1, n_b-1)`` + ``ELU``, an output layer
    ``Linear(n_b-1, 3)``, and ``abs()`` to keep the parameters positive.
    The decoder evaluates

    .. math:: \\hat S(b)/S_0 = F_p e^{-b D_p} + (1 - F_p) e^{-b D_t}

    at the b-values > 0.

    Parameters
    ----------
    b_values : array_like
        The acquisition's b-values in s/mm^2, starting at 0 and increasing.
    seed : int, keyword-only
        Seed of the weight initialisation (PyTorch's default layer init,
        drawn from a private generator: global RNG state is left untouched).

    Notes
    -----
    ``forward`` returns ``(X_pred, Dp, Dt, Fp)`` exactly as the seed's
    ``Net``; each parameter has shape ``(batch, 1)``.
    """

    #: ``train`` and ``predict`` feed the network these columns of the
    #: normalised signal and compare its reconstruction to them.
    input_columns = slice(1, None)

    def __init__(self, b_values, *, seed: int = 0):
        super().__init__()
        b = check_b_values(b_values)
        self.register_buffer("b_values", torch.tensor(b, dtype=torch.float32))
        self.register_buffer("b_values_no0", torch.tensor(b[1:], dtype=torch.float32))
        self.seed = int(seed)
        n = len(b) - 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers = []
            for _ in range(3):  # 3 fully connected hidden layers
                layers.extend([nn.Linear(n, n), nn.ELU()])
            self.encoder = nn.Sequential(*layers, nn.Linear(n, 3))

    def encode(self, X):
        """Parameters only, ``(batch, 3)`` columns Dp, Dt, Fp (no decoder)."""
        return torch.abs(self.encoder(X))

    def forward(self, X):
        params = self.encode(X)  # Dp, Dt, Fp
        Dp = params[:, 0].unsqueeze(1)
        Dt = params[:, 1].unsqueeze(1)
        Fp = params[:, 2].unsqueeze(1)
        X = ivim(self.b_values_no0, Dp, Dt, Fp)
        return X, Dp, Dt, Fp

    def settings(self) -> dict:
        """Constructor arguments, as stored in a checkpoint."""
        return {"b_values": self.b_values.tolist(), "seed": self.seed}


_ORDER = IVIMParams._fields  # (Dp, Dt, Fp, S0)
#: ``IVIMNetOptim``'s defaults for the options that reproduce IVIMNET's code (checkpoints store the others only).
_PROJECT_FORM = {"widen": 0.0, "amplitudes": False, "dropout_last": True}


class _GroupedLinear(nn.Module):
    """``groups`` independent linear layers computed as one matrix product.

    Features are laid out group after group, ``(batch, groups * n)``. With
    ``shared_input`` every group reads the same ``(batch, n_in)`` input (the
    first layer of parallel sub-networks); otherwise each group reads its own
    slice, in one batched matrix product. Numerically the same as separate
    ``nn.Linear`` layers, initialised the same way (uniform in
    +-1/sqrt(n_in)), but one product instead of one per group.
    """

    def __init__(self, groups, n_in, n_out, *, shared_input=False):
        super().__init__()
        bound = 1 / np.sqrt(n_in)
        self.shared_input = shared_input
        self.weight = nn.Parameter(torch.empty(groups, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, n_out).uniform_(-bound, bound))

    def extra_repr(self) -> str:
        g, n_in, n_out = self.weight.shape
        return f"groups={g}, in_features={n_in}, out_features={n_out}, shared_input={self.shared_input}"

    def forward(self, x):
        g, n_in, n_out = self.weight.shape
        if self.shared_input:
            w = self.weight.permute(1, 0, 2).reshape(n_in, g * n_out)
            return torch.addmm(self.bias.reshape(-1), x, w)
        # each group's slice times its own weights: one batched product (a block-diagonal matrix would
        # multiply zeros, and under vmap, for stacked networks, torch.block_diag runs member by member)
        out = torch.einsum("bgi,gio->bgo", x.reshape(len(x), g, n_in), self.weight) + self.bias
        return out.reshape(len(x), g * n_out)


class IVIMNetOptim(nn.Module):
    """IVIM-NET_optim (Kaandorp et al., MRM 2021;86:2250-2265), every change switchable.

    Differences from the seed's ``IVIMNet``, each a keyword so their effect can
    be measured one at a time:

    * ``bounds``: outputs squashed into physical ranges,
      :math:`p = p_{lo} + \\sigma(x)(p_{hi} - p_{lo})`, instead of ``abs()``.
      With the default ``FIT_BOUNDS`` Dp > 0.005 >= Dt, so the compartments
      cannot swap.
    * ``parallel``: one sub-network per parameter instead of one shared one.
    * ``fit_s0``: S0 (relative to the measured S(b=0)) is a fitted parameter
      and the b = 0 signal is part of input and loss.
    * ``batch_norm`` and ``dropout``: after every hidden layer (IVIMNET's code
      leaves dropout out after the last one: ``dropout_last=False``).

    Three options exist only to reproduce IVIMNET's code exactly (benchmark
    ``kaandorp2021``); the project's defaults differ:

    * ``widen``: each bound moved outwards by this fraction of its range
      (IVIMNET: 0.3, "to stay on the most linear bit of the sigmoid"), so
      estimates can leave the physical range (negative Fp, Dt or Dp).
    * ``amplitudes``: with ``fit_s0``, the network outputs the two
      compartments' amplitudes, :math:`A_p e^{-b D_p} + A_t e^{-b D_t}`, with
      :math:`A_p` inside the Fp bounds and :math:`A_t` inside the S0 bounds,
      and reports :math:`F_p = A_p / (A_p + A_t)`, :math:`S_0 = A_p + A_t`
      (IVIMNET's form); otherwise :math:`S_0 (F_p e^{-b D_p} + (1 - F_p) e^{-b D_t})`.
    * ``dropout_last``: dropout after the last hidden layer too (default).

    Parameters
    ----------
    b_values : array_like
        b-values in s/mm^2, starting at 0.
    bounds : dict, keyword-only
        ``{"Dp": (lo, hi), "Dt": ..., "Fp": ..., "S0": ...}``; default ``FIT_BOUNDS``.
    fit_s0, parallel, batch_norm : bool
        Published settings: all True.
    dropout : float
        Dropout probability (published: 0.1).
    width : int, optional
        Neurons per hidden layer (published: the number of b-values).
    depth : int
        Hidden layers per (sub-)network (published: 2).
    widen : float
        Fraction of each bound's range added below and above it (default 0;
        IVIMNET 0.3).
    amplitudes : bool
        IVIMNET's two-amplitude form of the fitted S0 (default False; needs
        ``fit_s0``).
    dropout_last : bool
        Dropout after the last hidden layer as after the others (default
        True; IVIMNET False).
    seed : int
        Seed of the weight initialisation (private generator).

    Notes
    -----
    The network reads all b-values of the normalised signal; ``forward``
    returns ``(X_pred, Dp, Dt, Fp, S0)`` with ``X_pred`` the reconstruction at
    every b-value (b = 0 included) and each parameter shaped ``(batch, 1)``.
    Kaandorp et al. train it with ``lr=3e-5`` and ``validation_fraction=0.1``;
    ``train_for_snr(method="optim")`` uses ``lr=OPTIM_LR`` (1e-3, see there)
    and the validation split.
    """

    input_columns = slice(None)
    #: IVIM-NET_optim stops early on a 10 % validation split.
    default_validation_fraction = 0.1

    def __init__(self, b_values, *, bounds=None, fit_s0=True, parallel=True, batch_norm=True, dropout=0.1,
                 width=None, depth=2, widen=0.0, amplitudes=False, dropout_last=True, seed=0):
        super().__init__()
        b = check_b_values(b_values)
        bounds = check_box(bounds or {}, name="bounds", keys=_ORDER, defaults=FIT_BOUNDS)
        lo = np.array([bounds[k][0] for k in _ORDER], dtype=float)
        hi = np.array([bounds[k][1] for k in _ORDER], dtype=float)
        if not 0 <= dropout < 1 or int(depth) < 1:
            raise ValueError("dropout must be in [0, 1) and depth >= 1.")
        if isinstance(widen, (bool, np.bool_)) or not (isinstance(widen, numbers.Real) and 0 <= widen <= 1):
            raise ValueError(f"widen must be a fraction of the bounds' range in [0, 1], got {widen!r}.")
        if amplitudes and not fit_s0:
            raise ValueError("amplitudes=True is IVIMNET's form of a fitted S0: it needs fit_s0=True.")
        lo, hi = (lo - widen * (hi - lo)).astype(np.float32), (hi + widen * (hi - lo)).astype(np.float32)
        if amplitudes and lo[2] + lo[3] <= 0:
            raise ValueError(f"with amplitudes=True the lowest Fp and S0 amplitudes must sum to more than 0 (S0 = their "
                             f"sum divides Fp), got {lo[2]:.3g} + {lo[3]:.3g} after widening; raise the S0 bound.")
        if width is not None and (isinstance(width, bool) or int(width) != width or width < 1):
            raise ValueError(f"width must be a whole number >= 1 (or None: the number of b-values), got {width!r}.")
        self.register_buffer("b_values", torch.tensor(b, dtype=torch.float32))
        self.register_buffer("lo", torch.from_numpy(lo))
        self.register_buffer("hi", torch.from_numpy(hi))
        self.options = {"bounds": {k: [float(bounds[k][0]), float(bounds[k][1])] for k in _ORDER},
                        "fit_s0": bool(fit_s0), "parallel": bool(parallel), "batch_norm": bool(batch_norm),
                        "dropout": float(dropout), "width": int(len(b) if width is None else width), "depth": int(depth),
                        "seed": int(seed)}
        # IVIMNET-reproduction options: stored only when used, so older checkpoints read the same
        extra = {"widen": float(widen), "amplitudes": bool(amplitudes), "dropout_last": bool(dropout_last)}
        self.options.update({k: v for k, v in extra.items() if v != _PROJECT_FORM[k]})
        self.amplitudes = bool(amplitudes)
        self.n_params = 4 if fit_s0 else 3
        groups = self.n_params if parallel else 1
        w = self.options["width"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            layers, n_in = [], len(b)
            for k in range(int(depth)):
                layers.append(_GroupedLinear(groups, n_in, w, shared_input=k == 0))
                if batch_norm:
                    layers.append(nn.BatchNorm1d(groups * w))
                layers.append(nn.ELU())
                if dropout and (dropout_last or k < int(depth) - 1):
                    layers.append(nn.Dropout(dropout))
                n_in = w
            layers.append(_GroupedLinear(groups, n_in, 1 if parallel else self.n_params))
            self.encoder = nn.Sequential(*layers)

    def encode(self, X):
        """Bounded parameters ``(batch, 3 or 4)``: Dp, Dt, Fp (and S0 when fitted)."""
        raw = self.encoder(X)  # (batch, n_params): one output per group, or all from one network
        n = self.n_params
        p = self.lo[:n] + torch.sigmoid(raw) * (self.hi[:n] - self.lo[:n])
        if self.amplitudes:  # IVIMNET: the Fp and S0 outputs are the two compartments' amplitudes
            total = p[:, 2:3] + p[:, 3:4]
            p = torch.cat([p[:, :2], p[:, 2:3] / total, total], dim=1)
        return p

    def forward(self, X):
        p = self.encode(X)
        Dp, Dt, Fp = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        S0 = p[:, 3:4] if p.shape[1] > 3 else torch.ones_like(Dp)
        return ivim(self.b_values, Dp, Dt, Fp, S0), Dp, Dt, Fp, S0

    def settings(self) -> dict:
        """Constructor arguments, as stored in a checkpoint."""
        return {"b_values": self.b_values.tolist(), **self.options}


#: (low, high) SNR at b = 0 that ``IVIMNetUncertainty`` is scaled for by default (pass it to
#: ``train_for_snr(UNCERTAINTY_SNR_RANGE, method="supervised")`` to train on it).
UNCERTAINTY_SNR_RANGE = (5.0, 200.0)

#: Heads of ``IVIMNetUncertainty`` per parameter, in the order of its output columns.
_HEADS = ("mean", "lower", "upper", "variance")


class IVIMNetUncertainty(nn.Module):
    """A supervised IVIM network for a range of noise levels that also says how sure it is.

    Input: the normalised signal ``S(b)/S(b=0)`` at the b-values > 0 and one
    noise column, the voxel's noise level relative to its measured S(b=0),

    .. math:: z = \\frac{\\log(\\sigma / S(b{=}0)) - c}{h}, \\quad
        c = -\\tfrac12 \\log(\\mathrm{SNR}_{lo}\\,\\mathrm{SNR}_{hi}), \\;
        h = \\tfrac12 \\log(\\mathrm{SNR}_{hi} / \\mathrm{SNR}_{lo}),

    with sigma the Rician noise SD in signal units, so ``z`` runs from -1 to 1
    over the trained SNR range (``noise_input`` builds it for ``train`` and
    ``predict`` alike). Together the two are equivalent to the raw signals in
    units of sigma, all the exact posterior with S0 unknown depends on.

    A fully connected trunk (``depth`` layers of ``width`` neurons, SiLU: much
    faster than ELU on a CPU, and smooth) ends
    in 12 outputs: for each of Dp, Dt, Fp, in box units (0 at the low end
    of ``bounds``, 1 at the high end),

    * ``mean`` ``m = sigmoid(a)``: trained with the squared error, so it
      estimates the posterior mean (for the simulated prior);
    * ``lower`` ``m * sigmoid(b)`` and ``upper`` ``m + (1 - m) sigmoid(c)``
      (inside the box and ordered lower <= mean <= upper by construction):
      trained with the pinball (quantile) loss at ``(1 - level)/2`` and
      ``(1 + level)/2``, so they estimate the ends of the central
      ``level`` credible interval;
    * ``variance`` ``v = (sigmoid(d) / 2)^2``: trained with the squared
      error against the squared residual of the (detached) mean, so it
      estimates the expected squared error of the mean head, which is the
      posterior variance where that head has reached the posterior mean;
      its square root is the SD.

    Each loss is a consistent scoring function for its target (its
    expectation over the training distribution is smallest at the posterior
    mean, quantile or variance): see ``supervised_loss``. Quantiles rather
    than mean +- 1.645 SD, because the posteriors are skewed and cut off by
    the prior box.

    Parameters
    ----------
    b_values : array_like
        b-values in s/mm^2, starting at 0.
    bounds : dict, keyword-only
        ``{"Dp": (lo, hi), "Dt": ..., "Fp": ...}`` (mm^2/s, mm^2/s, fraction):
        the prior box the network is trained on; default ``PARAMETER_BOX``.
    snr_range : (float, float)
        (low, high) SNR at b = 0 of the training data; sets the noise
        column's scaling (default ``UNCERTAINTY_SNR_RANGE``).
    level : float
        Credible level of the trained interval, in (0, 1) (default 0.9).
    width, depth : int
        Neurons per hidden layer and hidden layers.
    seed : int
        Seed of the weight initialisation (private generator).

    Notes
    -----
    ``forward`` returns ``(batch, 13)``: the 12 heads in box units, columns
    parameter-major (Dp mean, lower, upper, variance, then Dt, then Fp), and
    the noise input passed through (``supervised_loss`` weights by it).
    """

    input_columns = slice(1, None)
    default_validation_fraction = 0.1
    #: ``predict`` and ``train`` append the noise column (``noise_input``).
    takes_sigma = True
    #: Voxels per forward pass in ``predict``: 16384 x 64 activations stay in cache (2-4x faster than 131072).
    predict_chunk = 16_384

    def __init__(self, b_values, *, bounds=None, snr_range=UNCERTAINTY_SNR_RANGE, level=0.9, width=64, depth=3,
                 seed=0):
        super().__init__()
        from ..core.signal_model import PARAMETER_BOX

        b = check_b_values(b_values)
        bounds = check_box(bounds or {}, name="bounds", defaults=PARAMETER_BOX)
        lo_snr, hi_snr = check_snr_range(snr_range)
        if not (isinstance(level, (int, float)) and 0 < level < 1):
            raise ValueError(f"level must be a credible level between 0 and 1 (e.g. 0.9), got {level!r}.")
        if isinstance(width, bool) or int(width) != width or width < 1 or isinstance(depth, bool) \
                or int(depth) != depth or depth < 1:
            raise ValueError(f"width and depth must be whole numbers >= 1, got {width!r} and {depth!r}.")
        self.register_buffer("b_values", torch.tensor(b, dtype=torch.float32))
        keys = ("Dp", "Dt", "Fp")
        self.register_buffer("lo", torch.tensor([bounds[k][0] for k in keys], dtype=torch.float32))
        self.register_buffer("hi", torch.tensor([bounds[k][1] for k in keys], dtype=torch.float32))
        self.options = {"bounds": {k: [float(bounds[k][0]), float(bounds[k][1])] for k in keys},
                        "snr_range": [lo_snr, hi_snr], "level": float(level), "width": int(width),
                        "depth": int(depth), "seed": int(seed)}
        #: noise column: (log(sigma / S(b=0)) - centre) / half_width
        self.noise_centre = -0.5 * float(np.log(lo_snr * hi_snr))
        self.noise_half_width = 0.5 * float(np.log(hi_snr / lo_snr))
        self.quantiles = ((1 - level) / 2, (1 + level) / 2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            layers, n_in = [], len(b)  # n_b - 1 signal columns + the noise column
            for _ in range(int(depth)):
                layers.extend([nn.Linear(n_in, int(width)), nn.SiLU()])
                n_in = int(width)
            layers.append(nn.Linear(n_in, 3 * len(_HEADS)))
            self.encoder = nn.Sequential(*layers)

    def forward(self, X):
        """Box-unit heads and the noise input, ``(batch, 13)``, from inputs ``(batch, n_b)`` (see ``noise_input``)."""
        return uncertainty_heads(self.encoder(X), X[:, -1:])

    def encode(self, X):
        """What ``predict`` reads: ``(batch, 12)`` in parameter units, columns mean, lower, upper, sd.

        Each group of 3 is (Dp, Dt, Fp): Dp and Dt in mm^2/s, Fp a fraction.
        """
        o = self.forward(X)[:, :-1].view(-1, 3, len(_HEADS))
        span = self.hi - self.lo
        ends = self.lo[:, None] + span[:, None] * o[..., :3]  # mean, lower, upper
        return torch.cat([ends.transpose(1, 2).reshape(-1, 9), span * o[..., 3].sqrt()], dim=1)

    #: Each voxel's loss is weighted by (SNR / geometric-mean SNR of the range) ** SNR_WEIGHT, SNR its
    #: noise input S(b=0)/sigma: otherwise the low-SNR voxels, whose errors are largest, dominate the
    #: loss and the high-SNR estimates stay far from the posterior. A weight that depends on the
    #: input only leaves every head's minimiser (mean, quantiles, variance) unchanged.
    SNR_WEIGHT = 1.0

    def supervised_loss(self, out, targets):
        """Training loss of a batch: the one place the scoring rules live.

        Parameters
        ----------
        out : torch.Tensor
            ``forward``'s output, ``(batch, 13)``: the 12 heads and the noise input.
        targets : torch.Tensor
            True (Dp, Dt, Fp) in box units, ``(batch, 3)`` (0 at the low end
            of ``bounds``, 1 at the high end).

        Returns
        -------
        torch.Tensor
            Scalar: weighted mean (see ``SNR_WEIGHT``) over the batch and the
            3 parameters of the squared error of the mean, the pinball losses
            of the lower and upper interval ends, and the squared error of the
            variance against the squared residual of the (detached) mean.
            Each term's expectation is minimised by its posterior target
            (mean, quantiles, variance), so their sum is too.
        """
        o = out[:, :-1].view(-1, 3, len(_HEADS))
        m, lower, upper, variance = o.unbind(-1)
        weight = torch.exp(-self.SNR_WEIGHT * self.noise_half_width * out[:, -1:])
        q_lo, q_hi = self.quantiles
        residual = targets - m
        pinball = lambda q, end: torch.maximum(q * (targets - end), (q - 1) * (targets - end))  # noqa: E731
        square = (targets - m.detach()) ** 2
        per_voxel = residual ** 2 + pinball(q_lo, lower) + pinball(q_hi, upper) + (variance - square) ** 2
        return (weight * per_voxel).mean()

    def settings(self) -> dict:
        """Constructor arguments, as stored in a checkpoint."""
        return {"b_values": self.b_values.tolist(), **self.options}


def uncertainty_heads(raw, noise):
    """The 12 heads of an uncertainty network in box units, and its noise input: ``(batch, 13)``.

    Parameters
    ----------
    raw : torch.Tensor
        The last layer's output, ``(batch, 12)``: for each of Dp, Dt, Fp the
        pre-activations a, b, c, d of ``IVIMNetUncertainty``'s heads.
    noise : torch.Tensor
        ``(batch, 1)``, the noise input ``z`` (see ``noise_input``); it rides
        along for ``supervised_loss``'s weights.

    Returns
    -------
    torch.Tensor
        Columns parameter-major (Dp mean, lower, upper, variance, then Dt,
        then Fp), then ``noise``: mean ``m = sigmoid(a)``, lower
        ``m sigmoid(b)``, upper ``m + (1 - m) sigmoid(c)``, variance
        ``(sigmoid(d) / 2)^2``, with ``m`` detached in the other heads so
        they cannot move the mean.
    """
    g = torch.sigmoid(raw).view(-1, 3, len(_HEADS))
    m = g[..., 0]
    md = m.detach()  # the interval and variance heads must not move the mean
    lower = md * g[..., 1]
    upper = md + (1 - md) * g[..., 2]
    variance = (0.5 * g[..., 3]) ** 2
    heads = torch.stack([m, lower, upper, variance], dim=-1).view(-1, 3 * len(_HEADS))
    return torch.cat([heads, noise], dim=1)


def check_snr_range(snr_range):
    """(low, high) SNR pair as floats, 0 < low < high."""
    try:
        lo, hi = (float(v) for v in snr_range)
    except (TypeError, ValueError):
        raise ValueError(f"snr_range must be a (low, high) pair of SNRs, got {snr_range!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"snr_range must be a (low, high) pair of SNRs with 0 < low < high, got {snr_range!r}.")
    return lo, hi


def noise_input(net, x, s0, sigma):
    """The network's input: ``x`` plus, for a network that takes the noise level, its noise column.

    Parameters
    ----------
    net : torch.nn.Module
        A network; one with ``takes_sigma`` gets the noise column appended
        (see ``IVIMNetUncertainty``), any other gets ``x`` back unchanged.
    x : numpy.ndarray
        ``(n, k)`` float32: the normalised signal columns the network reads.
    s0 : numpy.ndarray
        ``(n,)`` the measured S(b=0) of each voxel, signal units.
    sigma : float or array_like or None
        Noise SD in signal units: one value, or one per voxel (shape ``(n,)``).

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` or ``(n, k + 1)`` float32.
    """
    if not getattr(net, "takes_sigma", False):
        if sigma is not None:
            raise ValueError(f"a {type(net).__name__} does not take the noise level; call it without sigma "
                             "(IVIMNetUncertainty does).")
        return x
    sig = check_sigma(sigma, len(x))
    z = (np.log(sig / np.asarray(s0, dtype=float)) - net.noise_centre) / net.noise_half_width
    return np.concatenate([x, z.astype(np.float32)[:, None]], axis=1)


def check_sigma(sigma, n):
    """Noise SD(s) in signal units as an ``(n,)`` float array, or a ValueError saying what to pass."""
    what = ("sigma is the noise SD in signal units (e.g. estimate_sigma(signals, b_values, absolute=True)): "
            f"one positive number, or one per voxel ({n} values)")
    if sigma is None:
        raise ValueError(f"this network needs the noise level: pass {what}.")
    try:
        sig = np.asarray(sigma, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what}; got {sigma!r}.") from None
    if sig.ndim == 0:
        sig = np.full(n, float(sig))
    elif sig.size == n:
        sig = sig.reshape(n)
    else:
        raise ValueError(f"{what}; got shape {sig.shape}.")
    if not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise ValueError(f"{what}; got NaN, inf or values <= 0.")
    return sig


#: Network classes a checkpoint may name, by class name.
NETWORKS = {"IVIMNet": IVIMNet, "IVIMNetOptim": IVIMNetOptim, "IVIMNetUncertainty": IVIMNetUncertainty}


def acquisition_matches(net: nn.Module, b_values) -> bool:
    """True when ``b_values`` (s/mm^2) are those ``net`` was built for."""
    b = np.asarray(b_values, dtype=float)
    ref = net.b_values.cpu().numpy().astype(float)
    return b.shape == ref.shape and np.allclose(b, ref, rtol=1e-6, atol=1e-6)
