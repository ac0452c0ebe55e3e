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

from .checks import check_b_values
from .model import ivim

__all__ = ["IVIMNet"]


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


#: Network classes a checkpoint may name, by class name.
NETWORKS = {"IVIMNet": IVIMNet}


def acquisition_matches(net: nn.Module, b_values) -> bool:
    """True when ``b_values`` (s/mm^2) are those ``net`` was built for."""
    b = np.asarray(b_values, dtype=float)
    ref = net.b_values.cpu().numpy().astype(float)
    return b.shape == ref.shape and np.allclose(b, ref, rtol=1e-6, atol=1e-6)
