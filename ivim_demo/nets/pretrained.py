"""The shipped any-protocol network: how it is trained (resumably), stored and loaded.

``load_pretrained()`` returns the network in ``ivim_demo/data/pretrained.pt``;
``train_pretrained(folder)`` retrains it from scratch (``python -m ivim_demo
pretrain --out folder``), saving its state every few hundred steps so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import time
from importlib import resources

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.checks import check_whole
from ..core.files import write_atomically
from ..core.prior import IN_VIVO_PRIOR
from ..core.signal_model import ivim
from .any_protocol import IVIMNetAnyProtocol
from .checkpoint import load_model, save_model
from .protocols import draw_protocols

__all__ = ["PRETRAINED_TRAINING", "PRETRAINED_FILE", "load_pretrained", "train_pretrained", "simulate_protocols"]

#: How the shipped network was trained (``train_pretrained``'s defaults).
PRETRAINED_TRAINING = {"steps": 250_000, "protocols_per_batch": 32, "voxels_per_protocol": 256, "lr": 1e-3,
                       "warmup": 1000, "final_lr_fraction": 0.01, "restart_step": 150_000, "restart_lr": 3e-4,
                       "validation_protocols": 64,
                       "validation_voxels": 512, "eval_every": 1000, "seed": 0}
#: The shipped weights, inside the package.
PRETRAINED_FILE = "pretrained.pt"
_STATE = "training_state.pt"


def simulate_protocols(net, b_values, counts, n_voxels, *, rng, generator):
    """Simulated training voxels for a batch of protocols: inputs, noise inputs and box-unit targets.

    Parameters are drawn from ``net.prior``, the SNR at b = 0 (of one image)
    log-uniformly from ``net.options["snr_range"]`` per voxel, S0 = 1, and
    every image gets its own Rician noise before the images of each b-value
    are averaged; the average of the b = 0 images normalises the others.

    Parameters
    ----------
    net : IVIMNetAnyProtocol
    b_values, counts : numpy.ndarray
        ``(P, L)`` protocols (see ``protocols.draw_protocols``).
    n_voxels : int
        Voxels per protocol, M.
    rng : numpy.random.Generator
        Draws the parameters and SNRs.
    generator : torch.Generator
        Draws the noise.

    Returns
    -------
    x : torch.Tensor
        ``(P, M, L - 1)`` normalised signals at b > 0 (0 for padding).
    z : torch.Tensor
        ``(P, M)`` noise inputs.
    targets : torch.Tensor
        ``(P * M, 3)`` true (Dp, Dt, Fp) in box units.
    """
    P, L = b_values.shape
    params = net.prior.sample(P * n_voxels, seed=rng)
    lo_snr, hi_snr = net.options["snr_range"]
    sigma = np.exp(-rng.uniform(np.log(lo_snr), np.log(hi_snr), size=P * n_voxels))
    p = torch.tensor(np.stack([params.Dp, params.Dt, params.Fp], axis=1), dtype=torch.float32)
    b = torch.tensor(b_values, dtype=torch.float32)
    c = torch.tensor(counts, dtype=torch.float32)
    clean = ivim(b[:, None, :], *(p[:, k].view(P, n_voxels, 1) for k in range(3)))  # (P, M, L)
    sig = torch.tensor(sigma, dtype=torch.float32).view(P, n_voxels, 1, 1)
    reps = int(counts.max())
    shape = (P, n_voxels, L, reps)
    real = clean[..., None] + sig * torch.randn(shape, generator=generator)
    imag = sig * torch.randn(shape, generator=generator)
    taken = (torch.arange(reps)[None, :] < c[..., None]).to(torch.float32)[:, None]  # (P, 1, L, R)
    mean = (torch.hypot(real, imag) * taken).sum(-1) / c.clamp(min=1)[:, None]
    s0 = mean[..., 0]
    x = mean[..., 1:] / s0[..., None] * (c[:, None, 1:] > 0)
    z = (torch.log(sig[..., 0, 0] / s0) - net.noise_centre) / net.noise_half_width
    targets = (p - net.lo) / (net.hi - net.lo)
    return x, z, targets


def _batch(net, n_protocols, n_voxels, rng, generator):
    b, c = draw_protocols(n_protocols, seed=rng)
    x, z, t = simulate_protocols(net, b, c, n_voxels, rng=rng, generator=generator)
    return x, z, torch.tensor(b, dtype=torch.float32), torch.tensor(c, dtype=torch.float32), t


def _lr(step, settings):
    """The learning rate of a step: one or two cycles of a linear warm-up and a cosine decay.

    The first cycle rises over ``warmup`` steps to ``lr`` and decays to
    ``final_lr_fraction * lr`` at ``restart_step`` (or at ``steps`` when
    there is no restart); the second rises again to ``restart_lr`` and
    decays to ``final_lr_fraction * restart_lr`` at ``steps``.
    """
    total, restart = settings["steps"], settings.get("restart_step")
    if restart is None or restart >= total:
        start, end, peak = 0, total, settings["lr"]
    elif step < restart:
        start, end, peak = 0, restart, settings["lr"]
    else:
        start, end, peak = restart, total, settings["restart_lr"]
    into, warm, floor = step - start, settings["warmup"], settings["final_lr_fraction"]
    if into < warm:
        return peak * (into + 1) / warm
    t = (into - warm) / max(1, end - start - warm)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _extends(saved, settings, step):
    """Whether a state saved with ``saved`` settings at ``step`` is the start of a run with ``settings``:
    the same settings but for the length and the restart, and the same learning rates up to ``step``."""
    schedule = ("steps", "restart_step", "restart_lr")
    same = {k: v for k, v in saved.items() if k not in schedule} == {k: v for k, v in settings.items()
                                                                      if k not in schedule}
    return same and step <= settings["steps"] and all(_lr(s, saved) == _lr(s, settings) for s in range(step))


def train_pretrained(folder, *, steps=None, seed=None, threads=None, progress=True, **options):
    """Train the any-protocol network from scratch, resumably; returns the best network.

    Every step draws ``protocols_per_batch`` protocols (``draw_protocols``)
    and ``voxels_per_protocol`` voxels for each (``simulate_protocols``);
    the loss is ``supervised_loss``. AdamW with a linear warm-up and a
    cosine decay of the learning rate, restarted once at ``restart_step``
    with a lower peak (``restart_lr``). Every ``eval_every`` steps the loss
    on a fixed validation set (other protocols and voxels, seeded) is
    computed and the weights with the lowest one are kept: the returned and
    saved network is the best one, never simply the last. The training
    state (weights, optimiser, random streams, best weights, history) is
    written atomically to ``folder/training_state.pt`` at each evaluation; a
    call with the same settings resumes from it, and so does a call that
    only lengthens the run with a schedule unchanged up to the saved step
    (e.g. a finished one-cycle run given ``restart_step`` = its length).

    Parameters
    ----------
    folder : str or os.PathLike
        Where the state and the result (``folder/pretrained.pt``) are written.
    steps : int, optional
        Optimiser steps (default ``PRETRAINED_TRAINING["steps"]``).
    seed : int, optional
        Seeds the weights, protocols, voxels and noise (default 0).
    threads : int, optional
        torch threads (default: torch's own choice).
    progress : bool
        Show a progress bar with the validation loss.
    **options
        Other entries of ``PRETRAINED_TRAINING`` (e.g. ``eval_every``).

    Returns
    -------
    IVIMNetAnyProtocol
        The best network, in eval mode, with ``.history``; also saved with
        ``save_model`` to ``folder/pretrained.pt``.
    """
    unknown = set(options) - set(PRETRAINED_TRAINING)
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}; known: {sorted(PRETRAINED_TRAINING)}.")
    settings = {**PRETRAINED_TRAINING, **options}
    if steps is not None:
        settings["steps"] = check_whole(steps, name="steps")
    if seed is not None:
        settings["seed"] = check_whole(seed, name="seed", minimum=0)
    if threads is not None:
        torch.set_num_threads(check_whole(threads, name="threads"))
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    net = IVIMNetAnyProtocol(prior=IN_VIVO_PRIOR, seed=settings["seed"])
    opt = torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=0.0)
    rng = np.random.default_rng([settings["seed"], 1])
    generator = torch.Generator().manual_seed(settings["seed"])
    val_rng = np.random.default_rng([settings["seed"], 2])
    validation = _batch(net, settings["validation_protocols"], settings["validation_voxels"], val_rng,
                        torch.Generator().manual_seed(settings["seed"] + 1))
    state_path = os.path.join(folder, _STATE)
    step, best, best_state, history, seconds = 0, math.inf, None, [], 0.0
    if os.path.exists(state_path):
        saved = torch.load(state_path, weights_only=False)
        if saved["settings"] != settings and not _extends(saved["settings"], settings, saved["step"]):
            raise ValueError(f"{state_path} was written with other settings ({saved['settings']}); use another "
                             "folder or delete it to start again.")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = json.loads(saved["rng"])
        generator.set_state(saved["generator"])
        step, best, best_state = saved["step"], saved["best"], saved["best_state"]
        history, seconds = saved["history"], saved["seconds"]
    bar = tqdm(total=settings["steps"], initial=step, desc="pretraining", unit="step", disable=not progress)
    start, running = time.perf_counter() - seconds, []
    net.train()
    while step < settings["steps"]:
        for group in opt.param_groups:
            group["lr"] = _lr(step, settings)
        x, z, b, c, t = _batch(net, settings["protocols_per_batch"], settings["voxels_per_protocol"], rng,
                               generator)
        loss = net.supervised_loss(net(x, z, b, c), t)
        if not torch.isfinite(loss):
            raise RuntimeError(f"the training loss became {loss.item()} at step {step}; lower the lr.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
        step += 1
        bar.update(1)
        if step % settings["eval_every"] == 0 or step == settings["steps"]:
            with torch.no_grad():
                val = net.supervised_loss(net(*validation[:4]), validation[4]).item()
            if val < best:
                best, best_state = val, {k: v.detach().clone() for k, v in net.state_dict().items()}
            history.append({"step": step, "train_loss": float(np.mean(running)), "validation_loss": val,
                            "seconds": time.perf_counter() - start})
            running = []
            bar.set_postfix(validation=f"{val:.3e}", best=f"{best:.3e}")
            _write_atomically(state_path, {
                "settings": settings, "net": net.state_dict(), "optimizer": opt.state_dict(),
                "rng": json.dumps(rng.bit_generator.state), "generator": generator.get_state(), "step": step,
                "best": best, "best_state": best_state, "history": history,
                "seconds": time.perf_counter() - start})
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    net.history = {"settings": settings, "evaluations": history, "best_validation_loss": best,
                   "seconds": history[-1]["seconds"] if history else 0.0,
                   "threads": torch.get_num_threads()}
    if len(history) > 1 and not best < history[0]["validation_loss"]:
        raise RuntimeError("the validation loss never improved on its first value; the training failed.")
    save_model(net, os.path.join(folder, PRETRAINED_FILE))
    return net


def _write_atomically(path, payload):
    write_atomically(path, lambda f: torch.save(payload, f))


def load_pretrained(path=None) -> IVIMNetAnyProtocol:
    """The shipped any-protocol network (or one saved by ``train_pretrained``).

    Parameters
    ----------
    path : str or os.PathLike, optional
        A checkpoint written by ``train_pretrained``; default the network
        shipped inside the package (``ivim_demo/data/pretrained.pt``, checked
        against its checksum).

    Returns
    -------
    IVIMNetAnyProtocol
        In eval mode on the CPU; ``net.prior`` is the prior it was trained on.
        Fit with ``predict(net, signals, b_values=b)``.
    """
    if path is None:
        path = resources.files("ivim_demo") / "data" / PRETRAINED_FILE
        if not path.is_file():
            raise ValueError("the package has no pretrained network (ivim_demo/data/pretrained.pt is missing); "
                             "reinstall ivim-demo, or train one with python -m ivim_demo pretrain --out FOLDER.")
    net = load_model(path)
    if not isinstance(net, IVIMNetAnyProtocol):
        raise ValueError(f"{os.fspath(path)!r} holds a {type(net).__name__}, not the any-protocol network; "
                         "load it with load_model.")
    return net
