"""Many networks of one architecture trained at once, as one stacked network.

A network of IVIM-NET's size is far too small to keep a CPU busy: a training
step costs about 1 ms, nearly all of it overhead. Stacking K networks (their
weights side by side, every layer one batched matrix product through
``torch.func.vmap``) makes a step for all K cost about 2-4 times one, so the
repeated trainings the comparisons need (seeds x SNRs) take minutes instead of
tens of minutes. Each member keeps everything ``train`` gives one network: its
own data, validation split, shuffling, Adam state, learning rate schedule,
early stopping and best weights.
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from ..core.checks import check_whole
from ..core.threads import one_torch_thread
from .training import (DIVERGED, TrainHistory, check_train_options, device, finish_training, training_inputs, training_loss)

__all__ = ["train_stack"]

#: Adam's constants (torch's defaults, as ``train`` uses them).
_BETAS, _EPS = (0.9, 0.999), 1e-8
#: ReduceLROnPlateau's (torch's defaults, factor as in ``train``): relative threshold and factor.
_PLATEAU_THRESHOLD, _PLATEAU_FACTOR = 1e-4, 0.2


def _architecture(net) -> dict:
    """What must agree between members: class, settings other than the seed, and tensor shapes."""
    settings = {k: v for k, v in net.settings().items() if k != "seed"}
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    return {"class": type(net).__name__, "settings": settings, "shapes": shapes}


def train_stack(nets, signals, *, seeds, targets=None, validation_fraction=None, batch_size: int = 128,
                lr: float = 1e-3, patience: int = 10, lr_patience=None, max_epochs: int = 1000,
                progress: bool = True):
    """Train several networks of one architecture at once, each as ``train`` would.

    Member ``k`` trains ``nets[k]`` on ``signals[k]`` (``targets[k]``) with
    shuffling and validation split seeded by ``seeds[k]``, exactly the
    algorithm of ``train``: Adam, shuffled mini-batches with the incomplete
    last one dropped, early stopping after ``patience`` epochs without
    improvement of its own monitored loss, its own learning-rate decay, and
    the weights of its own best epoch restored. The members are computed
    together (weights stacked, one ``vmap``-ed forward and backward pass per
    step); a member that has stopped leaves the stack, so the run lasts as
    long as its slowest member.

    Numerically a member matches ``train`` on the same network, data and seed
    up to float rounding (the stacked matrix products and the unfused Adam
    sum in another order); over many epochs those differences grow as they
    would between two machines. Dropout draws from one stream for the whole
    stack: the same stack (same members, same order) gives identical weights.

    Parameters
    ----------
    nets : sequence of IVIMNet or IVIMNetOptim
        Networks of one class with equal settings except their seed, trained
        in place (returned on the CPU in eval mode).
    signals : sequence of array_like
        One array of raw signals ``(n, n_b)`` per network, b = 0 first; every
        member needs the same number of voxels ``n``.
    seeds : sequence of int
        Seed of each member's split and shuffling (``train``'s ``seed``); the
        first also seeds dropout.
    targets : sequence of IVIMParams, optional
        True parameters per member: train supervised (see ``train``).
    validation_fraction, batch_size, lr, patience, lr_patience, max_epochs, progress
        As in ``train``, the same for every member.

    Returns
    -------
    list of TrainHistory
        One per network; ``seconds`` is the wall time of the whole stacked
        run and ``members`` the number of networks in it.
    """
    nets, signals, seeds = list(nets), list(signals), [int(s) for s in seeds]
    k = len(nets)
    check_whole(k, name="the number of networks")
    if len(signals) != k or len(seeds) != k or (targets is not None and len(targets) != k):
        raise ValueError(f"train_stack needs one signal array and one seed (and one targets) per network: "
                         f"got {k} networks, {len(signals)} signal arrays, {len(seeds)} seeds"
                         + ("" if targets is None else f", {len(targets)} targets") + ".")
    check_train_options(batch_size=batch_size, patience=patience, max_epochs=max_epochs, lr=lr, lr_patience=lr_patience)
    first = _architecture(nets[0])
    for i, net in enumerate(nets[1:], 1):
        if _architecture(net) != first:
            raise ValueError(f"network {i} differs from network 0 in class, settings or shape; train_stack "
                             "stacks networks of one architecture (only their seeds may differ).")
    dev = device()
    members = [training_inputs(net, s, None if targets is None else targets[i], validation_fraction, batch_size,
                       seeds[i], dev) for i, (net, s) in enumerate(zip(nets, signals))]
    sizes = {(len(m[1]), len(m[5])) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"every member needs the same number of voxels and validation voxels, got {sorted(sizes)} "
                         "(voxels, validation voxels); simulate the same n for each.")
    for net in nets:
        net.to(dev)
    histories = [TrainHistory(members=k) for _ in nets]
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), one_torch_thread(dev):
        torch.manual_seed(seeds[0])
        best = _Stack(nets, members, lr, lr_patience, batch_size, dev).run(histories, patience, max_epochs, progress)
    for i, (net, history) in enumerate(zip(nets, histories)):
        if best[i] is None:
            raise ValueError(f"network {i}: {DIVERGED}")
        net.load_state_dict(best[i])
        history.seconds = time.perf_counter() - start
        finish_training(net, history, members[i][0])
    return histories


def _plateau(current, state, lr, patience):
    """One epoch of ``torch.optim.lr_scheduler.ReduceLROnPlateau(factor=0.2, patience=patience)`` (mode
    "min", relative threshold 1e-4, no cooldown) for one member: ``(best, bad epochs), lr`` after it."""
    best, bad = state
    if current < best * (1 - _PLATEAU_THRESHOLD):
        best, bad = current, 0
    else:
        bad += 1
    if bad > patience:
        new = lr * _PLATEAU_FACTOR
        if lr - new > _EPS:
            lr = new
        bad = 0
    return (best, bad), lr


class _Stack:
    """The active members' weights as one flat tensor per member, with their Adam state and schedule."""

    def __init__(self, nets, members, lr, lr_patience, batch_size, dev):
        self.base = copy.deepcopy(nets[0]).to("meta")  # the architecture; weights come from the stack
        params, buffers = stack_module_state(nets)
        self.names = list(params)
        self.shapes = [params[n].shape[1:] for n in self.names]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.flat = torch.cat([params[n].reshape(len(nets), -1) for n in self.names], dim=1).detach()
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.step_count = 0
        self.ids = list(range(len(nets)))  # original member of each stacked row
        self.X = torch.stack([m[1] for m in members])
        self.Y = None if members[0][2] is None else torch.stack([m[2] for m in members])
        self.box_units = members[0][3]
        self.gens = [m[4] for m in members]
        self.val = torch.stack([m[5] for m in members])
        self.fit = torch.stack([m[6] for m in members])
        self.lr = torch.full((len(nets),), float(lr), device=dev)
        self.lr_patience = lr_patience
        self.batch_size = batch_size
        self.dev = dev

    def _params(self):
        chunks = torch.split(self.flat, self.sizes, dim=1)
        return {n: c.reshape(len(self.ids), *s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def _losses(self, idx, training):
        """Each active member's loss on its voxels ``idx`` (members, voxels)."""
        rows = torch.arange(len(self.ids), device=self.dev)[:, None]
        batch = self.X[rows, idx]
        y = None if self.Y is None else self.Y[rows, idx]
        base, box_units = self.base, self.box_units
        base.train(training)

        def one(p, b, x, t):
            return training_loss(base, functional_call(base, (p, b), (x,)), x, t, box_units)

        if y is None:
            return vmap(lambda p, b, x: one(p, b, x, None), randomness="different")(self._params(), self.buffers,
                                                                                     batch)
        return vmap(one, randomness="different")(self._params(), self.buffers, batch, y)

    def _adam(self, grad):
        (b1, b2), self.step_count = _BETAS, self.step_count + 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        denom = (self.v.sqrt() / math.sqrt(c2)).add_(_EPS)
        self.flat.sub_((self.lr / c1)[:, None] * self.m / denom)

    def _keep(self, rows):
        """Drop the members not in ``rows`` (indices into the stack) from every stacked tensor."""
        keep = torch.tensor(rows, dtype=torch.long, device=self.dev)
        for name in ("flat", "m", "v", "X", "Y", "val", "fit", "lr"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[keep])
        self.buffers = {n: b[keep] for n, b in self.buffers.items()}
        self.gens = [self.gens[r] for r in rows]
        self.ids = [self.ids[r] for r in rows]

    def _state(self, row):
        """The state dict of stacked row ``row``, as a network's ``state_dict``."""
        params = self._params()
        state = {n: params[n][row].detach().clone() for n in self.names}
        state.update({n: b[row].clone() for n, b in self.buffers.items()})
        return state

    def run(self, histories, patience, max_epochs, progress):
        k = len(self.ids)
        best_loss = [np.inf] * k
        bad = [0] * k
        plateau = [(np.inf, 0)] * k  # (best, epochs without improvement) of each member's lr schedule
        best_state = [None] * k
        n_fit, size = self.fit.shape[1], self.batch_size
        n_batches = n_fit // size
        bar = tqdm(range(max_epochs), desc=f"training {k} networks", unit="epoch", disable=not progress)
        for epoch in bar:
            orders = torch.stack([f[torch.randperm(n_fit, generator=g).to(self.dev)]
                                  for f, g in zip(self.fit, self.gens)])
            running = torch.zeros(len(self.ids), device=self.dev)
            for i in range(n_batches):
                self.flat.requires_grad_(True)
                losses = self._losses(orders[:, i * size : (i + 1) * size], True)
                (grad,) = torch.autograd.grad(losses.sum(), self.flat)
                self.flat = self.flat.detach()
                with torch.no_grad():
                    self._adam(grad)
                running += losses.detach()
            with torch.no_grad():
                val = self._losses(self.val, False) if self.val.shape[1] else None
            stopped = []
            for row, member in enumerate(self.ids):
                h = histories[member]
                h.loss.append(float(running[row]))
                h.lr.append(float(self.lr[row]))
                if val is not None:
                    h.val_loss.append(float(val[row]))
                current = h.val_loss[-1] if val is not None else h.loss[-1]
                if self.lr_patience is not None:
                    plateau[member], lr = _plateau(current, plateau[member], float(self.lr[row]), self.lr_patience)
                    self.lr[row] = lr
                if current < best_loss[member]:
                    best_loss[member], bad[member], h.best_epoch = current, 0, epoch
                    best_state[member] = self._state(row)
                else:
                    bad[member] += 1
                if bad[member] == patience:
                    h.stopped_early = True
                    stopped.append(row)
            if stopped:
                self._keep([r for r in range(len(self.ids)) if r not in stopped])
            bar.set_postfix(training=len(self.ids))
            if not self.ids:
                break
        bar.close()
        return best_state
