"""torch on one thread inside a block: the guard that fits, inference, training and cohort workers share; the
thread pool they run their chunks in; and the watch that ends a worker process whose parent has died."""
from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["one_torch_thread", "worker_pool", "exit_with_parent", "process_pool"]


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


_POOLS = {}
_LOCK = threading.Lock()


def worker_pool(workers):
    """A thread pool of ``workers`` threads shared by every call in this process (created on first use).

    A new thread pays a set-up cost on its first matrix product (the BLAS library's per-thread state:
    measured 0.08-0.3 s for one voxel's exact posterior on a loaded 2-core machine), so fits that run their
    chunks side by side keep their threads instead of starting new ones per call.
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, int(workers))
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=f"ivim-demo-{workers}")
    return pool


def exit_with_parent(interval: float = 1.0) -> None:
    """Make this (worker) process exit when the process that started it dies.

    A ``ProcessPoolExecutor`` worker finishes the task it holds even after its
    parent is gone: killed notebook kernels left two training workers running
    for ten minutes. Given as the pool's ``initializer``, this starts a daemon
    thread that checks every ``interval`` seconds whether the parent is still
    the one that started the worker, and ends the worker at once (exit code 1)
    when it is not. POSIX only (elsewhere it does nothing).

    Parameters
    ----------
    interval : float
        Seconds between checks.
    """
    import os
    import time

    if os.name != "posix":
        return
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="ivim-demo-exit-with-parent", daemon=True).start()


def process_pool(workers: int):
    """A pool of ``workers`` fresh processes for independent trainings or fits: spawned (no forked torch state)
    and each ending with its parent (``exit_with_parent``).

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
        Use it as a context manager.
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=exit_with_parent)
