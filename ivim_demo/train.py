"""Training IVIM-NET: the seed's loop, vectorised batching, best weights kept."""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import check_signals, normalise

__all__ = ["TrainHistory", "train", "device"]


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
    best_epoch : int
        Epoch (0-based) whose weights were restored.
    seconds : float
        Wall-clock training time.
    stopped_early : bool
        True when patience ran out before ``max_epochs``.
    """

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        """Number of epochs run."""
        return len(self.loss)

    def as_dict(self) -> dict:
        """Plain-type summary (for JSON or a checkpoint)."""
        return {
            "loss": [float(v) for v in self.loss],
            "val_loss": [float(v) for v in self.val_loss],
            "best_epoch": int(self.best_epoch),
            "epochs": self.epochs,
            "seconds": float(self.seconds),
            "stopped_early": bool(self.stopped_early),
        }


@contextlib.contextmanager
def _one_cpu_thread(dev):
    """Train small networks on one CPU thread.

    Batches of 128 x 8 values are too small to gain from threads; extra threads
    only spin, and when two processes share the cores (notebook + tests, xdist
    workers) OpenMP's spinning makes training many times slower.
    """
    if dev.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")


def train(
    net,
    signals,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    patience: int = 10,
    max_epochs: int = 1000,
    seed: int = 0,
    progress: bool = True,
):
    """Train an IVIM network unsupervised, as the seed does.

    Signals are normalised by their S(b=0); the network sees the columns it
    declares (``net.input_columns``; b > 0 for ``IVIMNet``) and is trained to
    reproduce them through the IVIM equation: loss = MSE between the
    reconstructed and the measured normalised signal.  Adam optimiser,
    shuffled mini-batches with the last incomplete batch dropped, early
    stopping when the epoch's summed training loss has not improved for
    ``patience`` epochs.  The weights of the *best* epoch are restored into
    ``net`` (the seed's ``final_model = net.state_dict()`` kept a live
    reference, so it actually returned the last epoch's weights).

    Parameters
    ----------
    net : IVIMNet
        Network to train in place (moved to the GPU if one is present and
        back to the CPU at the end).
    signals : array_like
        Raw signals shaped ``(..., n_b)`` with the b=0 column first, n_b the
        number of b-values the network was built for.
    batch_size, lr, patience, max_epochs : keyword-only
        The seed's settings by default: 128, 1e-3, 10, 1000.
    seed : int
        Seeds the shuffling; same seed, same data and same network seed give
        identical weights (on the same device).
    progress : bool
        Show a tqdm progress bar over epochs with the loss.

    Returns
    -------
    TrainHistory
    """
    for name, value in (("batch_size", batch_size), ("patience", patience), ("max_epochs", max_epochs)):
        _check_positive_int(name, value)
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    n_b = len(net.b_values)
    s = check_signals(signals, n_b=n_b).reshape(-1, n_b)
    if len(s) < batch_size:
        raise ValueError(
            f"need at least batch_size={batch_size} voxels to train, got {len(s)}; "
            "pass more voxels or a smaller batch_size."
        )
    x, _ = normalise(s)
    dev = device()
    X = torch.from_numpy(x[:, net.input_columns].astype(np.float32)).to(dev)
    net.to(dev)
    # fused Adam: same update, fewer kernel launches (matters for tiny nets)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    criterion = torch.nn.MSELoss()
    history = TrainHistory()
    n_batches = len(X) // batch_size
    best, bad_epochs, best_state = np.inf, 0, None
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _one_cpu_thread(dev):
        torch.manual_seed(seed)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        bar = tqdm(range(max_epochs), desc="training", unit="epoch", disable=not progress)
        for epoch in bar:
            net.train()
            shuffled = X[torch.randperm(len(X), generator=gen).to(dev)]
            running = torch.zeros((), device=dev)
            for i in range(n_batches):
                batch = shuffled[i * batch_size : (i + 1) * batch_size]
                optimizer.zero_grad()
                X_pred = net(batch)[0]
                loss = criterion(X_pred, batch)
                loss.backward()
                optimizer.step()
                running += loss.detach()
            running_loss = float(running)
            history.loss.append(running_loss)
            if running_loss < best:
                best, bad_epochs, history.best_epoch = running_loss, 0, epoch
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad_epochs += 1
            bar.set_postfix(loss=f"{running_loss:.4g}", best=f"{best:.4g}", bad=bad_epochs)
            if bad_epochs == patience:
                history.stopped_early = True
                break
        bar.close()
    if best_state is None:
        raise ValueError(
            "training diverged: the loss was never finite. Check the signals "
            "(normalised by S(b=0) they should be about 0-1.5) or lower lr."
        )
    net.load_state_dict(best_state)
    net.to("cpu")
    net.eval()
    history.seconds = time.perf_counter() - start
    return history
