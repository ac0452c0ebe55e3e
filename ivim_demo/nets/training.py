"""Training IVIM-NET: the seed's loop, vectorised batching, best weights kept."""
from __future__ import annotations

import numbers

import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.checks import check_noise, check_signals, check_whole, normalise
from ..core.metrics import PARAMS
from .networks import noise_input
from ..core.signal_model import PARAMETER_BOX
from ..core.threads import one_torch_thread

__all__ = ["TrainHistory", "train", "device", "training_warnings", "MIN_IMPROVEMENT", "MIN_OUTPUT_SPREAD",
           "DIVERGED", "check_train_options", "training_inputs", "training_loss", "finish_training"]


def device() -> torch.device:
    """The GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainHistory:
    """What happened during ``train``.

    Attributes
    ----------
    loss : list of float
        Summed training loss (MSE per batch, summed over the epoch's batches,
        as the seed prints it) per epoch.
    val_loss : list of float
        Mean validation loss per epoch (empty without a validation split).
    lr : list of float
        Learning rate used in each epoch.
    best_epoch : int
        Epoch (0-based) with the lowest monitored loss: its weights are the
        ones returned (unless ``train(weights="last")``).
    seconds : float
        Wall-clock training time.
    stopped_early : bool
        True when patience ran out before ``max_epochs``.
    warnings : list of str
        What ``train`` found wrong with the result (see ``training_warnings``):
        empty for a network that learned.
    members : int
        Networks trained together in one stacked run (``train_stack``; 1 for
        ``train``). ``seconds`` is then the wall time of the whole run.
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    stopped_early: bool = False
    warnings: list = field(default_factory=list)
    members: int = 1

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.loss)

    def as_dict(self) -> dict:
        """Plain-type summary (for JSON or a checkpoint)."""
        return {
            "loss": [float(v) for v in self.loss],
            "val_loss": [float(v) for v in self.val_loss],
            "lr": [float(v) for v in self.lr],
            "best_epoch": int(self.best_epoch),
            "epochs": self.epochs,
            "seconds": float(self.seconds),
            "stopped_early": bool(self.stopped_early),
            "warnings": [str(w) for w in self.warnings],
            "members": int(self.members),
        }


#: (Dp, Dt, Fp) rows of (low, high): supervised losses are computed in box units (0-1 inside), the
#: network's own bounds when it has them, else this simulation box.
_BOX = np.array([PARAMETER_BOX[name] for name in PARAMS])


def _box_of(net):
    """(3, 2) box of a network's (Dp, Dt, Fp) outputs: its bounds when bounded, else ``PARAMETER_BOX``."""
    bounds = getattr(net, "options", {}).get("bounds")
    return _BOX if bounds is None else np.array([bounds[name] for name in PARAMS], dtype=float)


def _targets_tensor(targets, n, box, dev):
    """Box-normalised (Dp, Dt, Fp) targets, shape (n, 3)."""
    if not all(hasattr(targets, name) for name in PARAMS):
        raise ValueError(f"targets must be an IVIMParams (or another object with fields Dp, Dt, Fp), e.g. from "
                         f"training_data; got {type(targets).__name__}.")
    cols = []
    for name in PARAMS:
        try:
            values = np.asarray(getattr(targets, name), dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"targets.{name} must be numbers, one per voxel.") from None
        if values.shape != (n,) or not np.all(np.isfinite(values)):
            raise ValueError(f"targets.{name} must hold one finite value per voxel ({n}), got shape {values.shape}.")
        cols.append(values)
    scaled = (np.stack(cols, axis=1) - box[:, 0]) / (box[:, 1] - box[:, 0])
    return torch.tensor(scaled, dtype=torch.float32, device=dev)


def _box_normaliser(box, dev):
    """The network's (Dp, Dt, Fp) outputs -> the units of ``_targets_tensor``."""
    lo = torch.tensor(box[:, 0], dtype=torch.float32, device=dev)
    span = torch.tensor(box[:, 1] - box[:, 0], dtype=torch.float32, device=dev)
    return lambda out: (torch.cat(out[1:4], dim=1) - lo) / span


def train(
    net,
    signals,
    *,
    targets=None,
    validation_fraction=None,
    batch_size: int = 128,
    lr: float = 1e-3,
    patience: int = 10,
    lr_patience=None,
    batches_per_epoch=None,
    max_epochs: int = 1000,
    seed: int = 0,
    progress: bool = True,
    sigma=None,
    noise: str = "rician",
    weight_decay: float = 0.0,
    weights: str = "best",
    clip=None,
):
    """Train an IVIM network, unsupervised as the seed does, or supervised.

    Signals are normalised by their S(b=0); the network sees the columns it
    declares (``net.input_columns``: b > 0 for ``IVIMNet``, all for
    ``IVIMNetOptim``). Unsupervised (the default), the loss is the MSE between
    the network's reconstruction through the IVIM equation and those measured
    columns: no ground truth needed. Adam optimiser, shuffled mini-batches with
    the last incomplete batch dropped, early stopping after ``patience`` epochs
    without improvement, and the weights of the *best* epoch restored into
    ``net`` (the seed's ``final_model = net.state_dict()`` kept a live
    reference, so it actually returned the last epoch's weights).

    Parameters
    ----------
    net : IVIMNet or IVIMNetOptim
        Network to train in place (on the GPU if one is present, returned on
        the CPU in eval mode).
    signals : array_like
        Raw signals ``(..., n_b)`` with the b=0 column first, n_b the number
        of b-values the network was built for.
    targets : IVIMParams, optional
        True parameters of each voxel: train *supervised*, minimising the MSE
        of (Dp, Dt, Fp) scaled to the network's bounds (``PARAMETER_BOX`` for
        an unbounded network), each 0-1 inside them. The minimiser of that loss over the training distribution is
        the posterior mean E[params | signal], the Bayes estimator for that
        prior: accurate exactly when real data follow the simulated prior.
        A network with its own ``supervised_loss(output, targets)``
        (``IVIMNetUncertainty``) is trained with that instead, on the same
        box-unit targets; it cannot train unsupervised.
    validation_fraction : float, optional
        Fraction of voxels held out (at random) to decide early stopping on
        their mean loss. Default: the network's own (``0`` for ``IVIMNet``,
        whose seed stops on the summed training loss; ``0.1`` for
        ``IVIMNetOptim``).
    batch_size, lr, patience, max_epochs : keyword-only
        The seed's settings by default: 128, 1e-3, 10, 1000.
    lr_patience : int, optional
        Divide the learning rate by 5 after this many epochs without
        improvement (``torch.optim.lr_scheduler.ReduceLROnPlateau``); use a
        value below ``patience`` so training can still improve before it
        stops. Default ``None``: constant learning rate, as the seed.
    batches_per_epoch : int, optional
        Mini-batches per epoch. Default ``None``: one pass over the training
        voxels, as the seed (``n // batch_size`` batches). A fixed number
        (IVIMNET's in vivo code uses 500) makes an epoch, and so the patience
        of early stopping, the same length whatever the voxel count: with
        the seed's rule a masked scan of 3,000 voxels has epochs of ~20
        batches, and training stops after a few hundred updates with the
        network still collapsed. Batches walk through successive shuffles
        of the training voxels, so every voxel is used equally often.
    seed : int
        Seeds the split and the shuffling (and dropout); same seed, data and
        network seed give identical weights on the same machine. Another CPU
        or MKL code path rounds differently, and the training may then take
        another path (README, *Across machines*).
    progress : bool
        Show a tqdm progress bar over epochs with the loss.
    sigma : float or array_like, optional
        Noise SD in signal units, one value or one per voxel: the noise input
        of a network that takes it (``IVIMNetUncertainty``, see
        ``networks.noise_input``); other networks refuse it.
    noise : {"rician", "gaussian"}
        The noise of the training signals: ``"rician"`` (magnitude images, the
        default) refuses negative samples; ``"gaussian"`` (real-valued or
        phase-corrected images, simulations with Gaussian noise) accepts them.
    weight_decay : float
        L2 penalty of Adam (``torch.optim.Adam(weight_decay=...)``). Default 0,
        as the seed; IVIMNET's code uses 1e-4.
    weights : {"best", "last"}
        Which weights ``net`` holds afterwards: the best epoch's (default), or
        the last epoch's, as IVIMNET's code does (``select_best = False``);
        ``"last"`` exists to reproduce Kaandorp et al. 2021 and nothing else.
    clip : (float, float), optional
        Unsupervised: the reconstruction clamped into ``[low, high]`` (NaN set
        to 0) before the loss, as IVIMNET's code does with (0, 3): with
        bounds that allow a negative Dp, :math:`e^{-b D_p}` overflows
        otherwise. Default None: not clamped.

    Returns
    -------
    TrainHistory
    """
    check_train_options(batch_size=batch_size, patience=patience, max_epochs=max_epochs, lr=lr,
                        batches_per_epoch=batches_per_epoch, lr_patience=lr_patience, seed=seed,
                        validation_fraction=validation_fraction)
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}.")
    if isinstance(weight_decay, bool) or not (isinstance(weight_decay, numbers.Real) and np.isfinite(weight_decay)
                                               and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}.")
    if clip is not None and not (np.shape(clip) == (2,) and np.all(np.isfinite(clip)) and clip[0] < clip[1]):
        raise ValueError(f"clip must be None or a (low, high) pair of numbers with low < high, got {clip!r}.")
    if clip is not None and targets is not None:
        raise ValueError("clip clamps the reconstruction of unsupervised training; supervised training (targets=) "
                         "has no reconstruction in its loss: leave clip out.")
    dev = device()
    s, X, Y, box_units, gen, val, fit = training_inputs(net, signals, targets, validation_fraction, batch_size, seed, dev,
                                                        sigma, negative=check_noise(noise) == "gaussian")
    n_val = len(val)
    net.to(dev)
    # fused Adam: same update, fewer kernel launches (matters for tiny nets)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.2, patience=lr_patience)
                 if lr_patience is not None else None)

    def loss_of(idx):
        batch = X[idx]
        out = net(batch)
        if clip is not None and Y is None:
            out = (torch.clamp(torch.nan_to_num(out[0], nan=0.0), float(clip[0]), float(clip[1])), *out[1:])
        return training_loss(net, out, batch, None if Y is None else Y[idx], box_units)

    history = TrainHistory()
    n_batches = len(fit) // batch_size if batches_per_epoch is None else int(batches_per_epoch)
    stream = torch.empty(0, dtype=torch.long, device=dev)  # voxel order, from successive shuffles

    def epoch_order():
        nonlocal stream
        if batches_per_epoch is None:  # the seed: one shuffle per epoch, the incomplete last batch dropped
            return fit[torch.randperm(len(fit), generator=gen).to(dev)]
        need = n_batches * batch_size
        shuffles = -(-(need - len(stream)) // len(fit))
        stream = torch.cat([stream, *(fit[torch.randperm(len(fit), generator=gen).to(dev)] for _ in range(shuffles))])
        order, stream = stream[:need], stream[need:]
        return order
    best, bad_epochs, best_state = np.inf, 0, None
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), one_torch_thread(dev):
        torch.manual_seed(seed)
        bar = tqdm(range(max_epochs), desc="training", unit="epoch", disable=not progress)
        for epoch in bar:
            net.train()
            shuffled = epoch_order()
            running = torch.zeros((), device=dev)
            for i in range(n_batches):
                optimizer.zero_grad()
                loss = loss_of(shuffled[i * batch_size : (i + 1) * batch_size])
                loss.backward()
                optimizer.step()
                running += loss.detach()
            history.loss.append(float(running))
            history.lr.append(float(optimizer.param_groups[0]["lr"]))
            if n_val:
                net.eval()
                with torch.no_grad():
                    history.val_loss.append(float(loss_of(val)))
            current = history.val_loss[-1] if n_val else history.loss[-1]
            if scheduler is not None:
                scheduler.step(current)
            if current < best:
                best, bad_epochs, history.best_epoch = current, 0, epoch
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad_epochs += 1
            bar.set_postfix(loss=f"{current:.4g}", best=f"{best:.4g}", bad=bad_epochs)
            if bad_epochs == patience:
                history.stopped_early = True
                break
        bar.close()
    if best_state is None:
        raise ValueError(DIVERGED)
    if weights == "best":
        net.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    finish_training(net, history, s, noise=noise)
    return history


#: What ``train`` and ``train_stack`` say when the loss was never finite.
DIVERGED = ("training diverged: the loss was never finite. Check the signals "
             "(normalised by S(b=0) they should be about 0-1.5) or lower lr.")


def check_train_options(*, batch_size, patience, max_epochs, lr, batches_per_epoch=None, lr_patience=None,
                        seed=0, validation_fraction=None):
    """The checks ``train`` and ``train_stack`` make of their shared options."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}.")
    if validation_fraction is not None and (isinstance(validation_fraction, bool)
                                            or not isinstance(validation_fraction, numbers.Real)):
        raise ValueError(f"validation_fraction must be a number in [0, 1), got {validation_fraction!r}.")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    for name, value in (("batch_size", batch_size), ("patience", patience), ("max_epochs", max_epochs)):
        check_whole(value, name=name, strict=True)
    if batches_per_epoch is not None:
        check_whole(batches_per_epoch, name="batches_per_epoch", strict=True)
    if lr_patience is not None:
        check_whole(lr_patience, name="lr_patience", strict=True)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")


def training_inputs(net, signals, targets, validation_fraction, batch_size, seed, dev, sigma=None, *, negative=False):
    """One network's training inputs, as ``train`` and each member of ``train_stack`` use them.

    Returns the checked raw signals ``s`` (n, n_b), the network's input
    columns ``X`` of the normalised signals, box-normalised targets ``Y`` (or
    None), the function taking the network's output to target units, the
    seeded shuffling generator, and the validation and training voxel indices
    (the validation split drawn first from that generator).
    """
    if validation_fraction is None:
        validation_fraction = getattr(net, "default_validation_fraction", 0.0)
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}.")
    n_b = len(net.b_values)
    s = check_signals(signals, n_b=n_b, negative=negative).reshape(-1, n_b)
    x, _ = normalise(s)
    X = torch.from_numpy(noise_input(net, x[:, net.input_columns].astype(np.float32), s[:, 0], sigma)).to(dev)
    if getattr(net, "supervised_loss", None) is not None and targets is None:
        raise ValueError(f"a {type(net).__name__} learns from the true parameters: pass targets= (supervised).")
    box = _box_of(net)
    Y = _targets_tensor(targets, len(X), box, dev) if targets is not None else None
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n_val = int(round(validation_fraction * len(X)))
    order = torch.randperm(len(X), generator=gen).to(dev) if n_val else torch.arange(len(X), device=dev)
    val, fit = order[:n_val], order[n_val:]
    if len(fit) < batch_size:
        raise ValueError(
            f"need at least batch_size={batch_size} training voxels, got {len(fit)}; "
            "pass more voxels or a smaller batch_size."
        )
    return s, X, Y, _box_normaliser(box, dev), gen, val, fit


def training_loss(net, out, batch, y, box_units):
    """The training loss of one network: MSE of the reconstruction (unsupervised, ``y`` None) or of the
    box-normalised parameters (supervised), or the network's own ``supervised_loss`` when it has one."""
    own = getattr(net, "supervised_loss", None)
    if own is not None:
        return own(out, y)
    mse = torch.nn.functional.mse_loss
    return mse(out[0], batch) if y is None else mse(box_units(out), y)


def finish_training(net, history, s, *, noise="rician"):
    """After training: CPU, eval mode, the labelling decided on the training signals, warnings given."""
    net.to("cpu")
    net.eval()
    from .infer import decide_labelling  # which output is Dp: decided once, on the training signals

    decide_labelling(net, s, negative=noise == "gaussian")
    history.warnings = training_warnings(net, history, s, noise=noise)
    for text in history.warnings:
        warnings.warn(text, RuntimeWarning, stacklevel=3)


#: Less than this relative fall of the monitored loss from the first epoch to the best: nothing was learned.
MIN_IMPROVEMENT = 1e-3
#: No estimate varies over the training voxels by more than this (relative to its mean): a constant network
#: (the dead explorer network above varied by 0.6-1 %; the shipped ones that learned, by 13-45 %).
MIN_OUTPUT_SPREAD = 0.02


def training_warnings(net, history: TrainHistory, signals, *, n_check: int = 2000,
                      noise: str = "rician") -> list:
    """Why a trained network should not be trusted, as sentences (empty: none found).

    Two failures that ``train`` otherwise returns without a word (a shipped
    explorer network once had both: loss flat at 52.2 for 13 epochs, Dp 0.68,
    Dt 0.51 mm^2/s, Fp 0.85 for every signal):

    * the loss never improved: the monitored loss (validation, or training
      without a split) at the best epoch is less than ``MIN_IMPROVEMENT``
      (relative) below the first epoch's;
    * a parameter is constant: on (up to ``n_check`` of) its training signals
      an estimated parameter varies by less than ``MIN_OUTPUT_SPREAD`` of its
      mean magnitude (one sentence per such parameter).

    Parameters
    ----------
    net : torch.nn.Module
        The trained network (eval mode, its labelling decided).
    history : TrainHistory
    signals : ndarray
        Its training signals ``(n, n_b)``.
    n_check : int
        How many of them to predict for the spread check (the first ones).
    noise : {"rician", "gaussian"}
        As in ``train``: ``"gaussian"`` signals may hold negative samples.

    Returns
    -------
    list of str
    """
    from .infer import predict

    out = []
    monitored = history.val_loss if history.val_loss else history.loss
    if len(monitored) > 1:
        first, best = monitored[0], min(monitored)
        if not best < first * (1 - MIN_IMPROVEMENT):
            out.append(f"training never improved the loss (first epoch {first:.4g}, best {best:.4g} after "
                       f"{len(monitored)} epochs): the network did not learn; train it again with another "
                       "seed or a lower lr, and check its estimates before use.")
    est = predict(net, signals[:n_check], noise=noise)
    if len(est.Dp) > 1:
        for p in PARAMS:
            values = getattr(est, p)
            mean = float(np.nanmean(values))
            spread = float(np.nanstd(values)) / max(abs(mean), 1e-30)
            if spread < MIN_OUTPUT_SPREAD:
                out.append(f"the network gives nearly the same {p} for every signal ({mean:.3g}, spread "
                           f"{spread:.1%} of its mean): it has not learned {p}; train it again with another "
                           f"seed or a lower lr, and do not use its {p} estimates.")
    return out
