"""Many networks at once: ``train_for_snr`` jobs trained as stacks, side by side, cached on disk."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os

import numpy as np

from ..core.threads import process_pool
from .checkpoint import load_model, save_model
from .ensemble import train_stack
from .recipes import train_for_snr, training_recipe

__all__ = ["STACK_SIZE", "train_jobs", "train_many"]

#: Most networks trained in one stack. Stacking costs little per network (an epoch of 20 seed
#: networks on 100k voxels each: 2.2 s on one core, of one network 1.1 s); larger groups are split
#: into stacks of at most this many, which worker processes can run side by side.
STACK_SIZE = 20


def train_jobs(jobs, *, workers=1, cache=None):
    """Run ``train_for_snr(**job)`` for every job dict: jobs of one architecture train together.

    Jobs that differ only in ``snr`` and ``seed`` build networks of one
    architecture and train as one stack (``train_stack``: each network as
    ``train_for_snr`` would train it, computed together, several times faster
    than one after the other; groups of more than ``STACK_SIZE`` jobs are
    split into evenly mixed stacks). The stacks run ``workers`` at a time in
    separate processes (training is single-threaded); the result depends on
    the jobs, not on ``workers``.

    Parameters
    ----------
    jobs : list of dict
        Keyword arguments of ``train_for_snr`` (``progress`` is ignored).
    workers : int
        Stacks trained at a time.
    cache : str or os.PathLike, optional
        Folder of trained networks: a job whose network is there (same job,
        same version of the package's training code) is loaded instead of
        trained, and every network trained is saved there. Notebooks 05 and
        06 share their identical trainings this way.

    Returns
    -------
    list of torch.nn.Module
        The trained networks in the order of ``jobs``, each with ``.history``.
    """
    jobs = [{**job, "progress": False} for job in jobs]
    nets = [None] * len(jobs)
    paths = [None] * len(jobs)
    if cache is not None:
        for i, job in enumerate(jobs):
            paths[i] = os.path.join(os.fspath(cache), f"{_job_key(job)}.pt")
            if os.path.isfile(paths[i]):
                nets[i] = load_model(paths[i])
    groups = {}
    for i, job in enumerate(jobs):
        if nets[i] is None:
            key = json.dumps({k: v for k, v in job.items() if k not in ("snr", "seed")}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
    tasks = []
    for members in groups.values():
        parts = -(-len(members) // STACK_SIZE)
        tasks += [members[j::parts] for j in range(parts)]
    tasks.sort(key=len, reverse=True)  # the big stacks first
    calls = [[jobs[i] for i in task] for task in tasks]
    if workers <= 1 or len(tasks) <= 1:
        results = [_stack(call) for call in calls]
    else:
        with process_pool(min(workers, len(tasks))) as pool:
            results = list(pool.map(_stack, calls))
    for task, trained in zip(tasks, results):
        for i, net in zip(task, trained):
            nets[i] = net
            if paths[i] is not None:
                save_model(net, paths[i])
    return nets


@functools.lru_cache(maxsize=1)
def _training_code() -> bytes:
    """The package's whole source, every module by its path (read once per process): a cached network is
    reused only by the code that trained it, and moving or renaming a module cannot leave a stale one."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package, above nets/
    files = sorted(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                   for folder, _, names in os.walk(root) for name in names if name.endswith(".py"))
    return b"".join(f.encode() + b"\0" + open(os.path.join(root, f), "rb").read() for f in files)


def _job_key(job) -> str:
    """A file name for a job's network: the job and the source of the code that trains it, hashed."""
    code = _training_code()
    defaults = {k: v.default for k, v in inspect.signature(train_for_snr).parameters.items() if k != "snr"}
    full = {**defaults, **job}
    full.pop("progress")
    full["n"] = 100_000 if full["n"] is None else full["n"]
    full["b_values"] = np.asarray(full["b_values"], dtype=float).tolist()
    for key in ("net_options", "train_options", "box"):
        full[key] = full[key] or None  # {} and None build the same network
    text = json.dumps(full, sort_keys=True, default=str)
    return hashlib.sha256(code + text.encode()).hexdigest()[:24]


def _stack(jobs):
    """Train the networks of ``jobs`` (one architecture) as one stack; module-level for worker processes."""
    recipes = [training_recipe(**job) for job in jobs]
    options = [{k: v for k, v in r[3].items() if k != "seed"} for r in recipes]
    targets = [r[2] for r in recipes]
    histories = train_stack([r[0] for r in recipes], [r[1] for r in recipes], seeds=[r[3]["seed"] for r in recipes],
                            targets=None if targets[0] is None else targets, **options[0])
    for (net, *_), history in zip(recipes, histories):
        net.history = history.as_dict()
    return [r[0] for r in recipes]


def train_many(snr, seeds, *, workers=1, **kwargs):
    """``train_for_snr(snr, seed=s, **kwargs)`` for each seed, ``workers`` at a time."""
    return train_jobs([{"snr": snr, "seed": s, **kwargs} for s in seeds], workers=workers)
