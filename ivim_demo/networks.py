"""IVIM-NET: networks that map a normalised DWI signal to IVIM parameters.

The networks are *unsupervised* and physics-informed: the encoder (fully
connected layers) predicts ``(Dp, Dt, Fp)`` and a fixed decoder, the IVIM
equation itself, turns them back into a signal.  Training minimises the
difference between that reconstruction and the measured signal, so no
ground-truth parameters are ever needed (Barbieri et al., MRM 2020).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .checks import check_b_values, check_box
from .signal_model import FIT_BOUNDS, IVIMParams, ivim

__all__ = ["IVIMNet", "IVIMNetOptim"]


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
    * ``batch_norm`` and ``dropout``: after every hidden layer.

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
                 width=None, depth=2, seed=0):
        super().__init__()
        b = check_b_values(b_values)
        bounds = check_box(bounds or {}, name="bounds", keys=_ORDER, defaults=FIT_BOUNDS)
        lo = np.array([bounds[k][0] for k in _ORDER], dtype=np.float32)
        hi = np.array([bounds[k][1] for k in _ORDER], dtype=np.float32)
        if not 0 <= dropout < 1 or int(depth) < 1:
            raise ValueError("dropout must be in [0, 1) and depth >= 1.")
        self.register_buffer("b_values", torch.tensor(b, dtype=torch.float32))
        self.register_buffer("lo", torch.from_numpy(lo))
        self.register_buffer("hi", torch.from_numpy(hi))
        self.options = {"bounds": {k: [float(bounds[k][0]), float(bounds[k][1])] for k in _ORDER},
                        "fit_s0": bool(fit_s0), "parallel": bool(parallel), "batch_norm": bool(batch_norm),
                        "dropout": float(dropout), "width": int(width or len(b)), "depth": int(depth),
                        "seed": int(seed)}
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
                if dropout:
                    layers.append(nn.Dropout(dropout))
                n_in = w
            layers.append(_GroupedLinear(groups, n_in, 1 if parallel else self.n_params))
            self.encoder = nn.Sequential(*layers)

    def encode(self, X):
        """Bounded parameters ``(batch, 3 or 4)``: Dp, Dt, Fp (and S0 when fitted)."""
        raw = self.encoder(X)  # (batch, n_params): one output per group, or all from one network
        n = self.n_params
        return self.lo[:n] + torch.sigmoid(raw) * (self.hi[:n] - self.lo[:n])

    def forward(self, X):
        p = self.encode(X)
        Dp, Dt, Fp = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        S0 = p[:, 3:4] if p.shape[1] > 3 else torch.ones_like(Dp)
        return ivim(self.b_values, Dp, Dt, Fp, S0), Dp, Dt, Fp, S0

    def settings(self) -> dict:
        """Constructor arguments, as stored in a checkpoint."""
        return {"b_values": self.b_values.tolist(), **self.options}


#: Network classes a checkpoint may name, by class name.
NETWORKS = {"IVIMNet": IVIMNet, "IVIMNetOptim": IVIMNetOptim}


def acquisition_matches(net: nn.Module, b_values) -> bool:
    """True when ``b_values`` (s/mm^2) are those ``net`` was built for."""
    b = np.asarray(b_values, dtype=float)
    ref = net.b_values.cpu().numpy().astype(float)
    return b.shape == ref.shape and np.allclose(b, ref, rtol=1e-6, atol=1e-6)
