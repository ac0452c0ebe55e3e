"""A supervised IVIM network for any b-value protocol: the protocol is an input, not a setting.

``IVIMNetAnyProtocol`` has two parts. A small *protocol encoder* reads the
protocol (distinct b-values and images per b-value) and writes the weights of
a plain fully connected network; that network reads a voxel's normalised
signal and noise level, as ``IVIMNetUncertainty`` does, and returns the
posterior mean, the ends of the central credible interval and the SD of Dp,
Dt and Fp. For one protocol the written network *is* an
``IVIMNetUncertainty`` (``specialise``), so fitting a scan costs what a
network trained for that scan costs, and the protocol encoder runs once.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.prior import IN_VIVO_PRIOR, Prior
from .networks import UNCERTAINTY_SNR_RANGE, IVIMNetUncertainty, check_snr_range, uncertainty_heads
from .protocols import Protocol

__all__ = ["IVIMNetAnyProtocol", "protocol_features"]

#: Decay rates (mm^2/s) of the fixed features exp(-b * rate) of each b-value the protocol encoder reads.
_RATES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)


def protocol_features(b_values, counts):
    """What the protocol encoder reads per b-value, ``(..., L, 2 + 6)``.

    ``b / 1000``, ``log(count)`` (0 where ``counts`` is 0, i.e. padding) and
    ``exp(-b * r)`` for six decay rates r from 0.0003 to 0.1 mm^2/s: the
    shapes IVIM signals are made of.

    Parameters
    ----------
    b_values : torch.Tensor
        ``(..., L)`` b-values in s/mm^2.
    counts : torch.Tensor
        ``(..., L)`` images per b-value (0 for padding).
    """
    rates = torch.tensor(_RATES, dtype=b_values.dtype, device=b_values.device)
    logc = torch.log(counts.clamp(min=1).to(b_values.dtype))
    return torch.cat([(b_values / 1000)[..., None], logc[..., None], torch.exp(-b_values[..., None] * rates)], dim=-1)


def _mlp(n_in, n_hidden, n_out):
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_hidden), nn.SiLU(),
                         nn.Linear(n_hidden, n_out))


class IVIMNetAnyProtocol(nn.Module):
    """One network for every protocol in ``PROTOCOL_RANGE``: posterior mean, interval and SD.

    The voxel network has ``depth`` hidden layers of ``width`` SiLU units and
    the 12 heads of ``IVIMNetUncertainty`` (mean, lower and upper interval
    end, variance of Dp, Dt and Fp, in units of the prior box). Its input is
    the voxel's signal averaged over the images of each b-value and divided
    by its S(b=0), at the b-values > 0, and the noise input
    ``z = (log(sigma / S(b=0)) - c) / h`` (``noise_input``). Its weights come
    from the protocol: with :math:`e_j` an embedding of b-value j
    (``protocol_features`` through a small MLP) and :math:`g` the mean of
    the :math:`e_j` with the number of b-values and images,

    .. math:: h_1 = \\mathrm{SiLU}\\Big(\\sum_{j: b_j > 0} x_j\\, w(e_j, g) + z\\, w_z(g) + c(g)\\Big),
        \\qquad h_{k+1} = \\mathrm{SiLU}\\big(\\gamma_k(g) \\odot (W_k h_k + c_k) + \\beta_k(g)\\big)

    so for a given protocol every layer is an ordinary linear layer
    (``specialise`` writes them into an ``IVIMNetUncertainty``). Trained
    supervised on simulations (``ivim_demo.nets.pretrained``): each loss
    term is minimised by its posterior target under ``prior``, Rician noise
    and the training distribution of protocols and SNRs.

    Parameters
    ----------
    prior : Prior, keyword-only
        The prior the training voxels are drawn from; the heads are in units
        of its box. Default ``IN_VIVO_PRIOR``.
    snr_range : (float, float)
        SNR at b = 0 (of one image) of the training voxels; scales the noise
        input. Default ``UNCERTAINTY_SNR_RANGE`` (5, 200).
    level : float
        Credible level of the interval heads (default 0.9).
    width, depth : int
        Units per hidden layer and hidden layers of the voxel network.
    embed : int
        Width of the protocol encoder.
    seed : int
        Seed of the weight initialisation (private generator).
    """

    #: ``predict`` reads these: a voxel's noise level is an input; the b-values are given at fit time.
    takes_sigma = True
    any_protocol = True
    #: Each voxel's loss is weighted by (SNR / geometric-mean SNR) ** 2 (``IVIMNetUncertainty`` uses 1): where
    #: the data determine the parameters their squared errors fall as 1/SNR^2, so this gives every SNR of
    #: the range a similar share of the loss and of the network's capacity. A weight that depends on the
    #: input only leaves every head's minimiser unchanged.
    SNR_WEIGHT = 2.0
    #: The scoring rules of ``IVIMNetUncertainty``, unchanged.
    supervised_loss = IVIMNetUncertainty.supervised_loss

    def __init__(self, *, prior=IN_VIVO_PRIOR, snr_range=UNCERTAINTY_SNR_RANGE, level=0.9, width=80, depth=3,
                 embed=64, seed=0):
        super().__init__()
        if isinstance(prior, dict):
            prior = Prior(prior["box"], log=tuple(prior.get("log", ())))
        if not isinstance(prior, Prior):
            raise ValueError(f"prior must be a Prior (e.g. IN_VIVO_PRIOR), got {type(prior).__name__}.")
        lo_snr, hi_snr = check_snr_range(snr_range)
        if not (isinstance(level, (int, float)) and 0 < level < 1):
            raise ValueError(f"level must be a credible level between 0 and 1 (e.g. 0.9), got {level!r}.")
        for name, value in (("width", width), ("depth", depth), ("embed", embed)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
        self.prior = prior
        keys = ("Dp", "Dt", "Fp")
        self.register_buffer("lo", torch.tensor([prior.box[k][0] for k in keys], dtype=torch.float32))
        self.register_buffer("hi", torch.tensor([prior.box[k][1] for k in keys], dtype=torch.float32))
        self.options = {"prior": prior.to_dict(), "snr_range": [lo_snr, hi_snr], "level": float(level),
                        "width": int(width), "depth": int(depth), "embed": int(embed), "seed": int(seed)}
        self.noise_centre = -0.5 * float(np.log(lo_snr * hi_snr))
        self.noise_half_width = 0.5 * float(np.log(hi_snr / lo_snr))
        self.quantiles = ((1 - level) / 2, (1 + level) / 2)
        w, e = int(width), int(embed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.element = _mlp(2 + len(_RATES), e, e)
            self.context = _mlp(e + 2, e, e)
            self.first = _mlp(2 * e, e, w)
            self.first_noise = nn.Linear(e, w)
            self.first_bias = nn.Linear(e, w)
            self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(int(depth) - 1))
            self.film = nn.Linear(e, 2 * w * (int(depth) - 1)) if depth > 1 else None
            self.out = nn.Linear(w, 12)
            if self.film is not None:  # start as an unmodulated network: gamma = 1, beta = 0
                nn.init.zeros_(self.film.weight)
                nn.init.zeros_(self.film.bias)

    def layers(self, b_values, counts):
        """The voxel network's weights for a batch of protocols.

        Parameters
        ----------
        b_values, counts : torch.Tensor
            ``(P, L)``: distinct b-values (s/mm^2, b = 0 first) and images per
            b-value, padded with count 0.

        Returns
        -------
        first : torch.Tensor
            ``(P, L - 1, width)`` weights of the signal columns (b > 0; 0 for padding).
        noise, bias : torch.Tensor
            ``(P, width)``: the noise input's weights and the first layer's bias.
        film : list of (torch.Tensor, torch.Tensor)
            Per further hidden layer, ``(gamma, beta)`` each ``(P, width)``.
        """
        used = (counts > 0).to(b_values.dtype)  # (P, L)
        e = self.element(protocol_features(b_values, counts))  # (P, L, E)
        n = used.sum(dim=1, keepdim=True)
        mean = (e * used[..., None]).sum(dim=1) / n
        images = (counts * used).sum(dim=1, keepdim=True)
        g = self.context(torch.cat([mean, torch.log(n), torch.log(images)], dim=1))  # (P, E)
        pair = torch.cat([e[:, 1:], g[:, None, :].expand(-1, e.shape[1] - 1, -1)], dim=-1)
        first = self.first(pair) * used[:, 1:, None] / torch.sqrt(n - 1)[..., None]
        film = []
        if self.film is not None:
            mods = self.film(g).view(len(g), len(self.hidden), 2, -1)
            film = [(1 + mods[:, k, 0], mods[:, k, 1]) for k in range(len(self.hidden))]
        return first, self.first_noise(g), self.first_bias(g), film

    def forward(self, x, z, b_values, counts):
        """Box-unit heads and the noise input, ``(P * M, 13)`` as ``IVIMNetUncertainty.forward``.

        Parameters
        ----------
        x : torch.Tensor
            ``(P, M, L - 1)``: M voxels per protocol, normalised signal at
            the b-values > 0 (0 for padding).
        z : torch.Tensor
            ``(P, M)`` noise inputs.
        b_values, counts : torch.Tensor
            ``(P, L)``, see ``layers``.
        """
        first, noise, bias, film = self.layers(b_values, counts)
        h = torch.nn.functional.silu(torch.bmm(x, first) + z[..., None] * noise[:, None] + bias[:, None])
        for layer, (gamma, beta) in zip(self.hidden, film):
            h = torch.nn.functional.silu(gamma[:, None] * layer(h) + beta[:, None])
        raw = self.out(h)
        return uncertainty_heads(raw.reshape(-1, 12), z.reshape(-1, 1))

    def specialise(self, protocol: Protocol) -> IVIMNetUncertainty:
        """The voxel network for one protocol, as an ``IVIMNetUncertainty`` (same outputs up to rounding).

        Parameters
        ----------
        protocol : Protocol
            Distinct b-values (s/mm^2, b = 0 first, increasing) and images per
            b-value (``protocols.protocol_of``).

        Returns
        -------
        IVIMNetUncertainty
            In eval mode, on this network's device, for signals averaged over
            the images of each b-value; ``.prior`` is this network's prior and
            ``.protocol`` the protocol.
        """
        o = self.options
        net = IVIMNetUncertainty(protocol.b_values, bounds=self.prior.box, snr_range=o["snr_range"], level=o["level"],
                                 width=o["width"], depth=o["depth"], seed=o["seed"])
        dev = self.lo.device
        b = torch.tensor(protocol.b_values, dtype=torch.float32, device=dev)[None]
        c = torch.tensor(protocol.counts, dtype=torch.float32, device=dev)[None]
        with torch.no_grad():
            first, noise, bias, film = self.layers(b, c)
            linear = [m for m in net.encoder if isinstance(m, nn.Linear)]
            linear[0].weight.copy_(torch.cat([first[0].T, noise[0][:, None]], dim=1))
            linear[0].bias.copy_(bias[0])
            for target, layer, (gamma, beta) in zip(linear[1:-1], self.hidden, film):
                target.weight.copy_(gamma[0][:, None] * layer.weight)
                target.bias.copy_(gamma[0] * layer.bias + beta[0])
            linear[-1].weight.copy_(self.out.weight)
            linear[-1].bias.copy_(self.out.bias)
        net.to(dev).eval()
        net.prior = self.prior
        net.protocol = protocol
        return net

    def settings(self) -> dict:
        """Constructor arguments, as stored in a checkpoint."""
        return dict(self.options)
