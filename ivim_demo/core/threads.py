"""torch on one thread inside a block: the guard that fits, inference, training and cohort workers share."""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["one_torch_thread"]


@contextmanager
def one_torch_thread(device=None):
    """Run torch single-threaded inside the block; yields torch's thread setting, restored afterwards.

    Small operations (a batch of 128 voxels, a chunk of a fit) gain nothing from torch's threads, which only
    spin-wait on each other, and many times over when other processes share the cores (notebook and tests,
    xdist or dask workers). Callers that have independent work run it side by side instead, in a pool of as
    many threads as this yields. On a GPU (``device`` given and not a CPU) nothing changes.

    Parameters
    ----------
    device : torch.device or str, optional
        Where the work runs; default the CPU.

    Yields
    ------
    int
        The number of threads torch had (use it as a worker count).
    """
    import torch

    threads = torch.get_num_threads()
    if device is not None and torch.device(device).type != "cpu":
        yield threads
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)
