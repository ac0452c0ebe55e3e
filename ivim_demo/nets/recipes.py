"""One call from an SNR to a trained network: the recipes notebooks 05 and 06 compare."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os


import numpy as np

from ..core.checks import check_b_values, check_noise, check_signals
from ..classical.fit import estimate_sigma
from ..core.signal_model import PARAMETER_BOX, SEED_B_VALUES
from ..core.prior import IN_VIVO_BOX, IN_VIVO_LOG
from ..core.threads import process_pool
from .networks import IVIMNet, IVIMNetOptim, IVIMNetUncertainty, check_snr_range
from ..core.signal_model import ivim
from ..simulation.simulate import add_rician_noise, sample_params, scan_like_data, training_data
from .checkpoint import load_model, save_model
from .ensemble import train_stack
from .training import train

__all__ = ["RECIPES", "ALIASES", "canonical", "SEED_TRAINING", "OPTIM_LR", "ABLATION", "ABLATION_EPOCH_CAP", "IN_VIVO_BOX", "IN_VIVO_LOG", "SCAN_BATCHES_PER_EPOCH", "SCAN_RECIPES",
           "MIN_SCAN_VOXELS", "SNR_RANGE_TRAINING", "STACK_SIZE", "seed_network", "train_for_snr", "train_on_scan", "train_many", "train_jobs"]

#: The seed's training settings (``train``'s defaults), as notebooks record them with a checkpoint.
SEED_TRAINING = {"batch_size": 128, "lr": 1e-3, "patience": 10}

#: Learning rate of the "optim" recipe. Kaandorp et al. publish 3e-5; with 100k voxels and
#: epochs of 781 batches that did not converge within 9 minutes on 2 cores, while 1e-3 and 3e-4
#: reached the same accuracy at SNR 20 (NRMSE Dp/Dt/Fp 0.60/0.16/0.22 and 0.61/0.16/0.22) in
#: 26 and 52 epochs. On IVIMNET's own settings (1M signals, 500 batches per epoch;
#: benchmarks/kaandorp2021.py) 3e-5 converges in 150-174 epochs and changes the recipe's NRMSE
#: D/f/D* from 0.173/0.213/0.489 to 0.175/0.221/0.461. We use 1e-3; pass
#: ``train_options={"lr": 3e-5}`` for the published value, or ``nets.published.train_published``
#: for IVIMNET's whole recipe.
OPTIM_LR = 1e-3

#: Old names of ``RECIPES``' methods, still accepted: the seed's network was "orig" (IVIM-NET_orig) here and
#: "ivimnet" in the command line and the registry; it is "ivimnet" everywhere now.
ALIASES = {"orig": "ivimnet"}


def canonical(method) -> str:
    """A ``RECIPES`` method's name, with ``ALIASES`` resolved; a ValueError naming the choices otherwise."""
    method = ALIASES.get(method, method) if isinstance(method, str) else method
    if method not in RECIPES:
        raise ValueError(f"method must be one of {list(RECIPES)}, got {method!r}.")
    return method


#: method -> what ``train_for_snr`` builds and how it trains it.
RECIPES = {
    "ivimnet": "the seed's IVIMNet (IVIM-NET_orig); unsupervised, lr 1e-3, stops on the training loss (Barbieri "
               "et al.)",
    "optim": "IVIMNetOptim with the published settings; unsupervised, lr 1e-3 (see OPTIM_LR), "
             "10 % validation split (Kaandorp et al.)",
    "supervised": "IVIMNetOptim bounded to the simulation box, no S0 output, no dropout; trained on the "
                  "true parameters (box-normalised MSE), lr 1e-3 divided by 5 after 3 epochs without "
                  "improvement, 10 % validation split. With a (low, high) SNR pair: IVIMNetUncertainty, the "
                  "noise level an input, trained on SNRs drawn log-uniformly from the range (SNR_RANGE_TRAINING) "
                  "for the posterior mean, the 5 % and 95 % quantiles and the posterior SD of each parameter",
}

#: How ``train_for_snr((low, high), method="supervised")`` trains ``IVIMNetUncertainty`` by default:
#: training voxels, mini-batch size, and ``train`` options.
SNR_RANGE_TRAINING = {"n": 1_000_000, "batch_size": 512, "lr": 1e-3, "lr_patience": 3, "validation_fraction": 0.1}


def seed_network(*, n=100_000, sigma=0.01, seed=0, max_epochs=1000, progress=True):
    """Exactly what notebooks 01 and 02 do: the seed's training set and network.

    ``training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)``, ``IVIMNet(seed=seed)``
    and ``train(..., seed=seed)`` with the seed's settings.

    Returns
    -------
    net : IVIMNet
    history : TrainHistory
    """
    signals, _ = training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)
    net = IVIMNet(SEED_B_VALUES, seed=seed)
    return net, train(net, signals, seed=seed, max_epochs=max_epochs, progress=progress)


def train_for_snr(snr, *, b_values=SEED_B_VALUES, method="optim", n=None, seed=0, max_epochs=1000,
                  progress=True, net_options=None, train_options=None, box=None):
    """Simulate training data at one SNR and return a network trained on it.

    Parameters
    ----------
    snr : float or (float, float)
        SNR at b = 0 of the training data (Rician sigma = 1/SNR, S0 = 1). A
        ``(low, high)`` pair (``method="supervised"`` only, e.g.
        ``UNCERTAINTY_SNR_RANGE`` = (5, 200)) trains one network for all
        SNRs in between: ``IVIMNetUncertainty``, whose input includes the
        noise level, on voxels whose SNR is drawn log-uniformly from the
        range (one per voxel), for the posterior mean, 90 % interval and SD of
        each parameter (see ``predict(net, signals, sigma=..., interval=0.9)``).
    b_values : array_like
        b-values in s/mm^2, starting at 0.
    method : {"ivimnet", "optim", "supervised"}
        See ``RECIPES``; ``"orig"`` is an old name of ``"ivimnet"`` (``ALIASES``).
        ``"supervised"`` needs the prior of the data to match
        the simulation box: it learns the posterior mean for that prior.
    n : int, optional
        Training voxels, drawn uniformly from ``box``; default 100 000, and
        ``SNR_RANGE_TRAINING["n"]`` (1 000 000) for an SNR range.
    seed : int
        Seeds the data (``seed + 1000``), the weights and the training.
    max_epochs : int
    progress : bool
    net_options : dict, optional
        Overrides of the network's constructor options (``"optim"`` and
        ``"supervised"``: any ``IVIMNetOptim`` keyword; an SNR range: any
        ``IVIMNetUncertainty`` keyword, e.g. ``width``), e.g. to switch one
        IVIM-NET_optim change off.
    train_options : dict, optional
        Overrides of ``train``'s options (``lr``, ``validation_fraction``,
        ``patience``, ...); they win over the recipe and the arguments above.
    box : dict, optional
        ``{"Dp": (lo, hi), "Dt": ..., "Fp": ...}`` (mm^2/s, mm^2/s, fraction)
        the training parameters are drawn from; default ``PARAMETER_BOX``.
        The supervised network is bounded to it, so make it cover the tissue
        you expect: that box is the prior its estimates lean towards.

    Returns
    -------
    torch.nn.Module
        The trained network in eval mode, with ``.history`` (dict).
    """
    if np.ndim(snr) == 1:
        return _train_for_snr_range(snr, b_values=b_values, method=method, n=n, seed=seed, max_epochs=max_epochs,
                                    progress=progress, net_options=net_options, train_options=train_options, box=box)
    net, signals, targets, options = _recipe(snr, b_values=b_values, method=method, n=n, seed=seed,
                                             max_epochs=max_epochs, progress=progress, net_options=net_options,
                                             train_options=train_options, box=box)
    history = train(net, signals, targets=targets, **options)
    net.history = history.as_dict()
    return net


def _train_for_snr_range(snr, *, b_values, method, n, seed, max_epochs, progress, net_options, train_options, box):
    """``train_for_snr`` with a (low, high) SNR pair: ``IVIMNetUncertainty`` on log-uniform noise levels."""
    if method != "supervised":
        raise ValueError(f"an SNR range {snr!r} trains method='supervised' (one network for all SNRs, with "
                         f"the noise level as input); method {method!r} takes one SNR.")
    box = PARAMETER_BOX if box is None else box
    low, high = check_snr_range(snr)
    b_values = check_b_values(b_values)
    n = SNR_RANGE_TRAINING["n"] if n is None else n
    rng = np.random.default_rng(seed + 1000)
    params = sample_params(n, box=box, seed=rng)
    sigma = np.exp(-rng.uniform(np.log(low), np.log(high), size=n))  # SNR log-uniform, one per voxel
    signals = add_rician_noise(ivim(b_values, *(v[:, None] for v in params[:3])), sigma[:, None], rng)
    net = IVIMNetUncertainty(b_values, **{"bounds": box, "snr_range": (low, high), "seed": seed,
                                          **(net_options or {})})
    options = _options(seed, max_epochs, progress, {k: v for k, v in SNR_RANGE_TRAINING.items() if k != "n"},
                       train_options)
    net.history = train(net, signals, targets=params, sigma=sigma, **options).as_dict()
    return net


def _recipe(snr, *, b_values=SEED_B_VALUES, method="optim", n=None, seed=0, max_epochs=1000, progress=True,
            net_options=None, train_options=None, box=None):
    """What ``train_for_snr`` trains at one SNR: the untrained network, its training signals and targets,
    ``train``'s options."""
    method = canonical(method)
    if np.ndim(snr) != 0 or not snr > 0:
        raise ValueError(f"snr must be > 0 (or a (low, high) pair for method='supervised'), got {snr!r}.")
    box = PARAMETER_BOX if box is None else box
    n = 100_000 if n is None else n
    signals, params = training_data(n, b_values, sigma=1.0 / snr, seed=seed + 1000, box=box)
    targets = None
    if method == "ivimnet":
        net = IVIMNet(b_values, **{"seed": seed, **(net_options or {})})
        options = {}
    elif method == "optim":
        net = IVIMNetOptim(b_values, seed=seed, **(net_options or {}))
        options = {"lr": OPTIM_LR, "validation_fraction": 0.1}
    else:
        net = IVIMNetOptim(b_values, **{"bounds": box, "fit_s0": False, "dropout": 0.0, "seed": seed,
                                        **(net_options or {})})
        # the lr decay buys the last few % at high SNR (Dt NRMSE at SNR 100: 0.045 -> 0.042; Bayes 0.040)
        options, targets = {"lr": 1e-3, "lr_patience": 3, "validation_fraction": 0.1}, params
    return net, signals, targets, _options(seed, max_epochs, progress, options, train_options)


def _options(seed, max_epochs, progress, recipe, overrides):
    """``train``'s options of a recipe: the call's seed, epochs and progress, the recipe's own, then overrides."""
    return {"seed": seed, "max_epochs": max_epochs, "progress": progress, **recipe, **(overrides or {})}


#: Most epochs of the ablation's steps 3-5. Bounded outputs without batch norm learn slowly at
#: lr 1e-3: their validation loss keeps falling by tiny amounts, so early stopping (10 epochs without
#: any improvement) came after 132, 362 and 250 epochs in single full-size trainings (a step ran
#: up to 8 minutes on one core). Capped, each such training stops at this many epochs; the
#: ablation's ``capped`` column counts the trainings that hit the cap.
ABLATION_EPOCH_CAP = 100

#: IVIM-NET_orig to IVIM-NET_optim one change at a time: (label, method, net_options, train_options).
#: Validation stopping comes first: the seed stops when the *summed training loss* has not improved
#: for 10 epochs, and with dropout or batch norm that loss keeps creeping down for hundreds of epochs
#: (a full-size step ran > 15 min on 2 cores), so every later step stops on the 10 % validation split.
#: Steps 3-5 keep the seed's depth (3 hidden layers) and stop at ``ABLATION_EPOCH_CAP`` epochs at the
#: latest; step 6 is the published network (= "optim").
_CAP = {"max_epochs": ABLATION_EPOCH_CAP}
ABLATION = [
    ("orig (seed)", "ivimnet", {}, {}),
    ("+ validation stopping", "ivimnet", {}, {"validation_fraction": 0.1}),
    ("+ bounded outputs", "optim", {"parallel": False, "fit_s0": False, "batch_norm": False, "dropout": 0.0,
                                    "depth": 3}, _CAP),
    ("+ one sub-network per parameter", "optim", {"fit_s0": False, "batch_norm": False, "dropout": 0.0,
                                                  "depth": 3}, _CAP),
    ("+ S0 fitted", "optim", {"batch_norm": False, "dropout": 0.0, "depth": 3}, _CAP),
    ("+ batch norm, dropout, 2 layers (= optim)", "optim", {}, {}),
    ("supervised", "supervised", {}, {}),
]



#: Mini-batches per epoch when a network trains on a scan (IVIMNET's in vivo code uses 500): an
#: epoch, and so early stopping's patience, no longer shrinks with the number of masked voxels.
SCAN_BATCHES_PER_EPOCH = 500

#: Fewest masked voxels an unsupervised network trains on (a 10 % validation split must still hold
#: a few dozen voxels, the training part several batches of 128).
MIN_SCAN_VOXELS = 500

#: What ``train_on_scan`` builds for each network method.
SCAN_RECIPES = {
    "ivimnet": "the seed's IVIMNet trained unsupervised on the scan's voxels; 500 batches per epoch, "
               "stops on a 10 % validation split",
    "optim": "IVIMNetOptim trained unsupervised on the scan's voxels; lr 1e-3 (OPTIM_LR), 500 batches per "
             "epoch, stops on a 10 % validation split",
    "supervised": "IVIMNetUncertainty bounded to IN_VIVO_BOX (posterior mean, 90 % interval and posterior SD "
                  "heads, the voxel's noise level an input), trained supervised on 100k simulated voxels with the "
                  "scan's b-values, S(b=0) levels and estimated noise, Dp and Dt log-uniform (IN_VIVO_LOG); its "
                  "snr_range is the 1st-99th percentile of the scan's S(b=0)/sigma (SCAN_SNR_LIMITS); "
                  "SNR_RANGE_TRAINING's lr and lr decay with mini-batches of 128, 10 % validation split",
}

#: ``train_on_scan(method="supervised")``'s ``snr_range``: the 1st and 99th percentile of the scan's
#: S(b=0)/sigma, clipped to these limits (below SNR 2 a voxel is mostly noise; above 1000 the noise
#: level hardly matters) and widened about its geometric centre to a ratio of at least
#: ``SCAN_SNR_MIN_RATIO`` (a scan of one signal level still gets a usable scaling). The range only
#: scales the noise input (to about -1..1): the training voxels have the scan's own SNRs.
SCAN_SNR_LIMITS = (2.0, 1000.0)
SCAN_SNR_MIN_RATIO = 4.0


def _scan_snr_range(s0, sigma):
    """(low, high) SNR at b = 0 of a scan's voxels: see ``SCAN_SNR_LIMITS``."""
    lo_lim, hi_lim = SCAN_SNR_LIMITS
    low, high = np.clip(np.percentile(np.asarray(s0, dtype=float) / sigma, [1, 99]), lo_lim, hi_lim)
    if high < SCAN_SNR_MIN_RATIO * low:
        centre = np.sqrt(low * high)
        low, high = centre / SCAN_SNR_MIN_RATIO**0.5, centre * SCAN_SNR_MIN_RATIO**0.5
    return float(low), float(high)


def train_on_scan(voxels, b_values, *, method="ivimnet", seed=0, max_epochs=1000, n_simulated=100_000,
                  progress=True, noise="rician"):
    """Train a network for one scan: on its own voxels, or on simulations that look like it.

    Parameters
    ----------
    voxels : array_like
        The scan's masked voxels ``(n, n_b)`` (signal units, b = 0 first).
    b_values : array_like
        Their b-values in s/mm^2.
    method : {"ivimnet", "optim", "supervised"}
        See ``SCAN_RECIPES``. ``"ivimnet"`` and ``"optim"`` learn, unsupervised,
        from the voxels themselves (as the paper does in vivo);
        ``"supervised"`` learns from ``n_simulated`` simulated voxels with the
        scan's b-values, its S(b=0) values and its noise (estimated from
        least-squares residuals), with parameters drawn from ``IN_VIVO_BOX``
        (Dp and Dt log-uniformly, Fp uniformly): an ``IVIMNetUncertainty``
        whose noise input is each voxel's sigma / S(b=0), so ``predict(net,
        signals, sigma=..., interval=0.9)`` gives posterior means, 90 %
        intervals and posterior SDs (for this prior and the scan's noise).
    seed : int
        Seeds the simulation, the weights and the training.
    max_epochs : int
    n_simulated : int
        Simulated training voxels for ``"supervised"``.
    progress : bool
    noise : {"rician", "gaussian"}
        The scan's noise: ``"gaussian"`` (real-valued images) lets its voxels hold negative samples, and
        the noise is estimated for it. ``"supervised"`` still simulates magnitude (Rician) signals: at
        the SNRs of tissue the two differ only where the signal is near 0.

    Returns
    -------
    torch.nn.Module
        The trained network in eval mode with ``.history`` (dict, with
        ``recipe``: the method; for ``"supervised"`` also ``noise_sd``, the
        noise in signal units it was trained for, and ``snr_range``).
    """
    if method not in SCAN_RECIPES:
        raise ValueError(f"method must be one of {list(SCAN_RECIPES)}, got {method!r}.")
    b = check_b_values(b_values)
    x = check_signals(voxels, n_b=len(b), negative=check_noise(noise) == "gaussian").reshape(-1, len(b))
    options = {"seed": seed, "max_epochs": max_epochs, "progress": progress, "validation_fraction": 0.1}
    if method == "supervised":
        sigma = float(estimate_sigma(x, b, absolute=True, noise=noise))
        if not sigma > 0:
            raise ValueError("the scan's estimated noise is 0 (its voxels fit the IVIM model exactly), so a "
                             "network for its noise level cannot be trained; use a classical fit (lsq).")
        signals, params = scan_like_data(n_simulated, b, x[:, 0], sigma, box=IN_VIVO_BOX, log=IN_VIVO_LOG,
                                         seed=seed + 1000)
        snr_range = _scan_snr_range(x[:, 0], sigma)
        net = IVIMNetUncertainty(b, bounds=IN_VIVO_BOX, snr_range=snr_range, seed=seed)
        # SNR_RANGE_TRAINING's lr and its decay, but mini-batches of 128 (train's default, as this recipe had
        # before): at 512, 100k voxels make only 176 steps an epoch and training stopped short (volunteer2's
        # spleen Dt 2.0x the authors' reference, 1.3x at 128)
        options.update({k: v for k, v in SNR_RANGE_TRAINING.items() if k not in ("n", "batch_size")})
        history = train(net, signals, targets=params, sigma=sigma, **options)
        net.history = {**history.as_dict(), "recipe": method, "noise_sd": sigma, "snr_range": list(snr_range)}
        return net
    if len(x) < MIN_SCAN_VOXELS:
        raise ValueError(f"training {method} on a scan needs at least {MIN_SCAN_VOXELS} masked voxels, this one has "
                         f"{len(x)}; use method 'supervised' (trained on simulations) or a classical fit.")
    net = IVIMNet(b, seed=seed) if method == "ivimnet" else IVIMNetOptim(b, seed=seed)
    lr = 1e-3 if method == "ivimnet" else OPTIM_LR
    history = train(net, x, lr=lr, batches_per_epoch=SCAN_BATCHES_PER_EPOCH, noise=noise, **options)
    net.history = {**history.as_dict(), "recipe": method}
    return net


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
    recipes = [_recipe(**job) for job in jobs]
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


