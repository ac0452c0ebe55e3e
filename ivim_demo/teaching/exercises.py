"""Checks for the notebooks' exercises: ``iv.check_answer("01.2", answer_2)``.

Every exercise has a checking function here that judges the student's answer
against a value the package computes (never a number typed in), with a
tolerance that fits the exercise: exact for counts and for deterministic
seeded computations (up to float rounding), a few standard errors for a
Monte Carlo estimate, a mean's standard error for region means of a noisy
image. Some answers are functions (``region_errors``, ``nrmse_and_bias``,
``my_spearman``): they are run on a case the checker builds.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np

__all__ = ["EXERCISES", "WHY_QUESTIONS", "check_answer"]


class _Exercise(NamedTuple):
    judge: Callable  # answer -> None when right, else what is off (one line)
    hint: str
    why: str
    question: dict | None = None  # the "why" part: {letter: (explanation, None if right else what is wrong with it)}


_REGISTRY: dict = {}


class _Wrong(Exception):
    """Raised inside a judging function: the answer cannot be right (wrong type, shape, ...)."""


def _exercise(exercise_id, *, hint, why, question=None):
    def register(judge):
        if question is not None and sum(fault is None for _, fault in question.values()) != 1:
            raise ValueError(f"exercise {exercise_id}: a why question needs exactly one right explanation.")
        _REGISTRY[exercise_id] = _Exercise(judge, hint, why, question)
        return judge
    return register


def _judge_why(exercise, why):
    """None when ``why`` picks the right explanation, else what is wrong with the one picked (or with the answer)."""
    if why is None:
        return ("the number is right; now the why: set why_N to the letter of the explanation you think holds "
                f"({', '.join(sorted(exercise.question))}) and run the cell again.")
    choice = str(why).strip().lower()
    if choice not in exercise.question:
        return f"why must be one of the letters {', '.join(sorted(exercise.question))}, got {why!r}."
    fault = exercise.question[choice][1]
    return None if fault is None else f"({choice}) does not hold: {fault}"


def check_answer(exercise_id, answer, *, why=None, quiet=False) -> bool:
    """Check the answer to one exercise of the notebooks.

    Parameters
    ----------
    exercise_id : str
        Notebook and exercise number, e.g. ``"01.2"`` (see ``EXERCISES``).
    answer : object
        What the exercise asks for (a number, a list, a function, ...);
        ``None`` means not attempted yet.
    why : str, keyword-only
        For an exercise that also asks *why* (``WHY_QUESTIONS``): the letter of
        the explanation chosen among those in the exercise's text. It is judged
        once the answer is right; a wrong choice hears what is wrong with it.
    quiet : bool, keyword-only
        Print nothing and raise ``AssertionError`` with the reason when the
        answer is wrong or missing (the solution cells use this in CI).

    Returns
    -------
    bool
        True when the answer is right.

    Raises
    ------
    ValueError
        For an unknown ``exercise_id``.
    AssertionError
        With ``quiet=True``, when the answer is wrong or None.
    """
    if exercise_id not in _REGISTRY:
        raise ValueError(f"unknown exercise {exercise_id!r}; the exercises are {sorted(_REGISTRY)}.")
    exercise = _REGISTRY[exercise_id]
    if answer is None:
        problem = "not answered yet: replace None by your answer and run the cell again."
    else:
        try:
            problem = exercise.judge(answer)
        except _Wrong as wrong:
            problem = str(wrong)
    why_problem = None
    if problem is None and exercise.question is not None:
        why_problem = _judge_why(exercise, why)
        if why_problem is not None and quiet:
            raise AssertionError(f"exercise {exercise_id}: {why_problem}")
        if why_problem is not None:
            print(f"{exercise_id}: {why_problem}")
            return False
    if quiet:
        if problem is not None:
            raise AssertionError(f"exercise {exercise_id}: {problem}")
        return True
    if problem is None:
        print(f"{exercise_id}: correct. {exercise.why}")
        return True
    print(f"{exercise_id}: {problem}")
    if answer is not None:
        print(f"hint: {exercise.hint}")
    return False


# ----------------------------------------------------------------------------- answer readers


def _number(answer, what="a number"):
    if isinstance(answer, bool):
        raise _Wrong(f"expected {what}, got {answer!r}.")
    try:
        value = float(np.asarray(answer, dtype=float).reshape(()))
    except (TypeError, ValueError):
        raise _Wrong(f"expected {what}, got {type(answer).__name__} {answer!r:.60}.") from None
    if not np.isfinite(value):
        raise _Wrong(f"expected {what}, got {value}.")
    return value


def _integer(answer, what="a whole number"):
    value = _number(answer, what)
    if value != round(value):
        raise _Wrong(f"expected {what}, got {value}.")
    return int(round(value))


def _count_off(answer, expected, what):
    """Text saying a count is off (None when it equals ``expected``); ``what`` names the things counted."""
    value = _integer(answer, f"a count of {what}")
    if value == expected:
        return None
    return f"{value} is not the number of {what}: count again, from the definition, not by adjusting the number."


def _numbers(answer, shape, what):
    try:
        values = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        raise _Wrong(f"expected {what}, got {type(answer).__name__}.") from None
    if values.shape != shape:
        raise _Wrong(f"expected {what} (shape {shape}), got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise _Wrong(f"expected {what}, got non-finite values {values.tolist()}.")
    return values


def _call(function, *args, what):
    if not callable(function):
        raise _Wrong(f"expected a function ({what}), got {type(function).__name__}.")
    try:
        return function(*args)
    except Exception as error:  # the student's code failed: say how, not a traceback
        raise _Wrong(f"your function raised {type(error).__name__}: {error}") from None


def _off(value, expected, *, tol, unit=""):
    """Text saying that ``value`` misses ``expected`` (None when within ``tol``): near or far, not in which direction
    or by how much, so that the answer has to be computed, not found by trying numbers."""
    if abs(value - expected) <= tol:
        return None
    how = "close, but outside the tolerance" if abs(value - expected) <= 10 * tol else "not the answer"
    return f"{value:.6g}{unit} is {how} (allowed ± {tol:.2g}{unit}): check the steps against the hint."


# ----------------------------------------------------------------------------- 01 training data

#: Exercise 01.1: the perfusion part of a voxel with this Dp (mm^2/s) ...
_DP_01 = 0.05
#: ... counts as informative at a b-value where it is above this share of its b = 0 value.
_SHARE_01 = 0.01
#: Exercise 01.2: the voxel (Dp, Dt in mm^2/s, Fp), its noise, b-value (s/mm^2) and the draws asked for.
_VOXEL_01, _SIGMA_01, _B_01, _DRAWS_01 = (0.05, 0.001, 0.2), 0.05, 1000.0, 100_000
#: Exercise 01.3: the simulated set (voxels, sigma, seed).
_SET_01 = (10_000, 0.05, 0)


@_exercise("01.1", hint="the perfusion part is Fp·exp(-b·Dp): it falls below 1 % of its b = 0 value where "
                        "exp(-b·Dp) < 0.01; count the seed's b-values > 0 before that.",
           why="only these few low b-values carry Dp: it is the hardest parameter to estimate.")
def _check_01_1(answer):
    from ..core.signal_model import SEED_B_VALUES, ivim

    b = SEED_B_VALUES
    perfusion = ivim(b, _DP_01, 0.0, 1.0)  # Fp = 1: the perfusion compartment alone, 1 at b = 0
    expected = int(np.sum((b > 0) & (perfusion > _SHARE_01)))
    return _count_off(answer, expected, "b-values")


@lru_cache(maxsize=1)
def _rician_bias_01():
    from ..core.signal_model import ivim
    from ..simulation.simulate import add_rician_noise

    clean = float(ivim(_B_01, *_VOXEL_01))
    draws = add_rician_noise(np.full(2_000_000, clean), _SIGMA_01, np.random.default_rng(2026))
    return float(draws.mean() - clean), float(draws.std())


@_exercise("01.2", hint="the bias is what is left when you average many noisy copies of one clean signal and "
                        "subtract the clean value: make the clean signal with iv.ivim, copy it many times, add "
                        "Rician noise of the given SD with iv.add_rician_noise, and average.",
           why="the magnitude never averages to the true signal at low SNR: the Rician floor that fits must "
               "allow for.")
def _check_01_2(answer):
    expected, sd = _rician_bias_01()
    value = _number(answer, "the bias (mean noisy signal minus the true signal, relative to S0)")
    return _off(value, expected, tol=4 * sd / np.sqrt(_DRAWS_01))  # 4 standard errors of a 100 000-draw mean


@_exercise("01.3", hint="x = signals / signals[:, :1]; compare the columns of b = 500 and b = 1000 "
                        "(indices 6 and 7) voxel by voxel and take the mean of the comparison.",
           why="at SNR 20 noise makes many decays rise at high b: a fit cannot tell such voxels' Dt well.",
           question={
               "a": ("in those voxels Dt is negative, and the fit should allow it", "no tissue has a negative "
                     "diffusivity; the model S0·[...] can only fall with b, so a rise cannot be tissue."),
               "b": ("at high b noise dominates what is left of the signal, so a fit pushes those voxels' Dt "
                     "towards its lower bound: Dt is underestimated where the signal is low", None),
               "c": ("perfusion is still present at b = 1000 and adds signal there", "at b = 1000 the perfusion "
                     "term Fp·e^(-1000·Dp) is below e^-10 of Fp for any Dp in the box: it is gone."),
           })
def _check_01_3(answer):
    from ..core.signal_model import SEED_B_VALUES
    from ..simulation.simulate import training_data

    n, sigma, seed = _SET_01
    signals, _ = training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)
    b = list(SEED_B_VALUES)
    x = signals / signals[:, :1]
    expected = float(np.mean(x[:, b.index(1000.0)] > x[:, b.index(500.0)]))
    value = _number(answer, "a fraction between 0 and 1")
    if value > 1:
        return f"{value} is above 1: give a fraction, not a percentage or a count."
    return _off(value, expected, tol=1 / n)  # deterministic; one voxel of slack for > vs >=


# ----------------------------------------------------------------------------- 02 network training

#: Exercise 02.1: the sparse acquisition (s/mm^2).
_SPARSE_02 = (0.0, 20.0, 150.0, 1000.0)
#: Exercise 02.3: the simulated set (voxels, sigma: SNR 10, seed).
_SET_02 = (10_000, 0.1, 0)


@_exercise("02.1", hint="build iv.IVIMNet(np.array([0, 20, 150, 1000.0])) and sum p.numel() over net.parameters() "
                        "(or count: each Linear(n_in, n_out) has n_in·n_out weights and n_out biases).",
           why="the network's width is the number of b-values > 0: a sparse acquisition also means a much "
               "smaller network.")
def _check_02_1(answer):
    from ..nets.networks import IVIMNet

    expected = sum(p.numel() for p in IVIMNet(np.array(_SPARSE_02)).parameters() if p.requires_grad)
    return _count_off(answer, expected, "weights")


def _state_follows_02():
    import torch

    from ..nets.networks import IVIMNet

    net = IVIMNet(np.array([0.0, 10, 100, 1000]), seed=0)
    kept, copied = net.state_dict(), copy.deepcopy(net.state_dict())
    with torch.no_grad():
        net.encoder[0].weight += 1.0
    live = net.encoder[0].weight
    return bool(torch.equal(kept["encoder.0.weight"], live)), bool(torch.equal(copied["encoder.0.weight"], live))


@_exercise("02.2", hint="kept = net.state_dict(); copied = copy.deepcopy(net.state_dict()); change a weight under "
                        "torch.no_grad(); compare both with torch.equal(..., net.encoder[0].weight).",
           why="state_dict() holds references to the live tensors: the seed's 'best' model was the last epoch's.")
def _check_02_2(answer):
    expected = _state_follows_02()
    try:
        values = tuple(answer)
    except TypeError:
        raise _Wrong("expected a pair (state_dict follows the changes, deepcopy follows the changes).") from None
    if len(values) != 2 or not all(isinstance(v, (bool, np.bool_)) for v in values):
        raise _Wrong(f"expected a pair of True/False, got {answer!r}.")
    names = ("the state_dict() 'copy'", "the deepcopy")
    wrong = [f"{name} {'does' if truth else 'does not'} follow the live weights"
             for name, value, truth in zip(names, values, expected) if bool(value) != truth]
    return None if not wrong else "; ".join(wrong) + "."


def _noise_floor_02():
    from ..core.signal_model import SEED_B_VALUES, ivim
    from ..simulation.simulate import training_data

    n, sigma, seed = _SET_02
    signals, truth = training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)
    x = signals[:, 1:] / signals[:, :1]
    model = ivim(SEED_B_VALUES[1:], truth.Dp[:, None], truth.Dt[:, None], truth.Fp[:, None])
    return float(np.mean((model - x) ** 2))


@_exercise("02.3", hint="the loss compares the network's input (the normalised signal at b > 0) with a "
                        "reconstruction; here the reconstruction comes from the true parameters instead of the "
                        "network's, so evaluate the IVIM equation at them and take the same mean squared "
                        "difference the training uses.",
           why="even the true parameters leave this loss: at SNR 10 the noise, not the network, sets the "
               "floor of the loss curve.")
def _check_02_3(answer):
    expected = _noise_floor_02()
    value = _number(answer, "a mean squared error")
    return _off(value, expected, tol=1e-3 * expected)  # float32 (torch) vs float64 rounding


# ----------------------------------------------------------------------------- 03 phantom

#: Exercises 03.2 and 03.3: the notebook's phantom noise (signal units).
_SIGMA_03 = 15.0


def _region_means_03(b):
    """Noise-free region signals at ``b`` and the allowed error of a region mean of the noisy phantom."""
    from ..core.signal_model import ivim
    from ..simulation.simulate import PHANTOM_REGIONS, phantom_regions

    labels = phantom_regions()
    clean = np.array([float(ivim(b, r.Dp, r.Dt, r.Fp, r.S0)) for r in PHANTOM_REGIONS])
    n = np.array([np.sum(labels == k) for k in range(len(PHANTOM_REGIONS))])
    # 4 standard errors of the noise in a region mean, plus the Rician bias (about sigma^2 / 2S)
    return clean, 4 * _SIGMA_03 / np.sqrt(n) + _SIGMA_03 ** 2 / (2 * clean)


@_exercise("03.1", hint="which package function makes the phantom's label image (0, 1, 2 per voxel), how does numpy "
                        "count the entries equal to a value, and are the region boundaries inclusive?",
           why="a region's voxel count sets how precisely its mean is known (SE = sigma / sqrt(n)).")
def _check_03_1(answer):
    from ..simulation.simulate import phantom_regions

    labels = phantom_regions((100, 100))
    expected = np.array([np.sum(labels == k) for k in range(3)])
    values = _numbers(answer, (3,), "three voxel counts, regions 0, 1, 2")
    if not np.array_equal(values, expected):
        off = [f"region {k}" for k, (v, e) in enumerate(zip(values, expected)) if v != e]
        return f"the count of {', '.join(off)} is not right: count each region's voxels in the label image."
    return None


@_exercise("03.2", hint="dwi[..., 7][labels == k].mean() for k = 0, 1, 2 (b = 1000 is the last image).",
           why="region means of the noisy images follow the model S0·[Fp·e^(-bDp) + (1-Fp)·e^(-bDt)]: at b = 1000 "
               "the outer region (lowest Dt) is brightest.",
           question={
               "a": ("region 2, because its S0 is highest", "S0 differs by 14 % between the regions, their "
                     "b = 1000 signals by more than a factor 2: that is not S0."),
               "c": ("region 2, because its Dt is lowest: at b = 1000 only the tissue term (1 - Fp)·e^(-1000·Dt) "
                     "is left, and the slowest decay keeps the most signal", None),
               "b": ("region 2, because its Fp is highest: more perfusion signal", "at b = 1000 the perfusion "
                     "term has decayed away; a larger Fp leaves less tissue signal, not more."),
               "d": ("region 0, because its Dp is lowest", "region 0 is the darkest at b = 1000; Dp no longer "
                     "matters there."),
           })
def _check_03_2(answer):
    expected, tol = _region_means_03(1000.0)
    values = _numbers(answer, (3,), "three mean signals at b = 1000, regions 0, 1, 2")
    off = [f"region {k}: {_off(v, e, tol=t)}" for k, (v, e, t) in enumerate(zip(values, expected, tol))
           if _off(v, e, tol=t)]
    return "; ".join(off) or None


@_exercise("03.3", hint="with m500, m1000 the region means at b = 500 and 1000: Dt = log(m500 / m1000) / 500 "
                        "(mm²/s); the perfusion part has vanished at these b-values.",
           why="two high-b images give Dt without any fit: the idea behind the segmented fit.")
def _check_03_3(answer):
    from ..simulation.simulate import PHANTOM_REGIONS

    m500, tol500 = _region_means_03(500.0)
    m1000, tol1000 = _region_means_03(1000.0)
    expected = np.log(m500 / m1000) / 500.0
    tol = np.hypot(tol500 / m500, tol1000 / m1000) / 500.0  # error propagation of the two means
    values = _numbers(answer, (3,), "three Dt values in mm²/s, regions 0, 1, 2")
    if np.all(values > 0.1):
        return "these look like 10^-3 mm²/s or µm²/ms units: give Dt in mm²/s (about 0.001)."
    off = [f"region {k}: {_off(v, e, tol=t)}" for k, (v, e, t) in enumerate(zip(values, expected, tol))
           if _off(v, e, tol=t)]
    truth = [r.Dt for r in PHANTOM_REGIONS]
    return ("; ".join(off) + f" (true Dt {truth})") if off else None


# ----------------------------------------------------------------------------- 04 inference

#: Exercise 04.1: region 1 of the phantom (Dp, Dt in mm^2/s, Fp).
_REGION_04 = (0.04, 0.001, 0.2)
#: Exercise 04.2: the perfusion share of the signal drop from b = 0 to this b (s/mm^2).
_B_04 = 60.0


@_exercise("04.1", hint="the two compartments can exchange names: the slow one with the fast one's fraction "
                        "1 - Fp becomes 'perfusion'.",
           why="both labellings give the same signal: nothing in an unbounded network says which is Dp, hence "
               "the swap guard.")
def _check_04_1(answer):
    from ..core.signal_model import SEED_B_VALUES, ivim

    values = _numbers(answer, (3,), "(Dp, Dt, Fp)")
    if np.allclose(values, _REGION_04):
        return "that is region 1's own labelling: give the other one."
    target = ivim(SEED_B_VALUES, *_REGION_04)
    mine = ivim(SEED_B_VALUES, *values)
    worst = float(np.max(np.abs(mine - target)))
    if worst > 1e-9:
        return f"your parameters give another signal (largest difference {worst:.3g} of S0 over the seed's b-values)."
    return None


@_exercise("04.2", hint="drop from b = 0 to 60: perfusion Fp·(1 - e^(-60·Dp)), tissue (1 - Fp)·(1 - e^(-60·Dt)); "
                        "share = perfusion / (perfusion + tissue), per region (iv.PHANTOM_REGIONS).",
           why="where Fp is small (region 0) perfusion is only part of the early drop: little signal to "
               "estimate Dp from.")
def _check_04_2(answer):
    from ..core.signal_model import ivim
    from ..simulation.simulate import PHANTOM_REGIONS

    expected = []
    for r in PHANTOM_REGIONS:
        perfusion = r.Fp * (ivim(0.0, r.Dp, 0.0, 1.0) - ivim(_B_04, r.Dp, 0.0, 1.0))
        tissue = (1 - r.Fp) * (ivim(0.0, 0.0, r.Dt, 0.0) - ivim(_B_04, 0.0, r.Dt, 0.0))
        expected.append(float(perfusion / (perfusion + tissue)))
    values = _numbers(answer, (3,), "three shares between 0 and 1, regions 0, 1, 2")
    off = [f"region {k}: {_off(v, e, tol=1e-3)}" for k, (v, e) in enumerate(zip(values, expected))
           if _off(v, e, tol=1e-3)]  # three decimals are enough
    return "; ".join(off) or None


@lru_cache(maxsize=1)
def _segmented_phantom_04():
    from ..classical.fit import fit_segmented
    from ..core.signal_model import SEED_B_VALUES
    from ..simulation.simulate import phantom, phantom_regions

    dwi, truth = phantom(sigma=15.0, seed=1)
    return fit_segmented(dwi, SEED_B_VALUES), truth, phantom_regions()


@_exercise("04.3", hint="for each region k: inside = labels == k; abs(est[inside].mean() - true[inside].mean()) / "
                        "true[inside].mean(), for Dp, Dt, Fp; return an array of shape (3, 3).",
           why="one number per region and parameter shows where an estimator fails: Dp where Fp is small.")
def _check_04_3(answer):
    from ..core.metrics import PARAMS, region_stats

    estimate, truth, labels = _segmented_phantom_04()
    rows = region_stats(estimate, labels, truth)
    expected = np.array([[abs(r[f"{p}_mean"] - r[f"{p}_true"]) / r[f"{p}_true"] for p in PARAMS] for r in rows])
    result = _call(answer, estimate, truth, labels, what="region_errors(estimate, truth, labels)")
    values = _numbers(result, (3, 3), "an array: one row per region, columns Dp, Dt, Fp")
    if not np.allclose(values, expected, rtol=1e-6, atol=1e-12):
        k, j = np.unravel_index(np.argmax(np.abs(values - expected)), expected.shape)
        return (f"on the phantom's segmented fit, region {k} {PARAMS[j]} gives {values[k, j]:.4g}, "
                f"expected {expected[k, j]:.4g} (iv.region_stats).")
    return None


# ----------------------------------------------------------------------------- 05 comparison


@lru_cache(maxsize=1)
def _lsq_case_05():
    from ..classical.fit import fit_lsq
    from ..core.signal_model import SEED_B_VALUES
    from ..simulation.simulate import training_data

    signals, truth = training_data(500, SEED_B_VALUES, sigma=0.05, seed=5)
    return fit_lsq(signals, SEED_B_VALUES), truth


@_exercise("05.1", hint="a uniform truth on (lo, hi) has mean (lo + hi) / 2 and SD (hi - lo) / sqrt(12); guessing the "
                        "mean for every voxel leaves an RMSE equal to that SD (iv.PARAMETER_BOX holds lo, hi).",
           why="an estimator whose NRMSE is near this has learned nothing from the signal: the yardstick for the "
               "low-SNR Dp columns.")
def _check_05_1(answer):
    from ..core.metrics import PARAMS
    from ..core.signal_model import PARAMETER_BOX

    box = np.array([PARAMETER_BOX[p] for p in PARAMS])
    expected = (box[:, 1] - box[:, 0]) / np.sqrt(12) / box.mean(axis=1)
    values = _numbers(answer, (3,), "three NRMSEs, for Dp, Dt, Fp")
    # 5 %: exact from the box, or simulated with >= 2000 voxels (relative SE of such an RMS about 1 %)
    off = [f"{p}: {_off(v, e, tol=0.05 * e)}" for p, v, e in zip(PARAMS, values, expected) if _off(v, e, tol=0.05 * e)]
    return "; ".join(off) or None


@_exercise("05.2", hint="both numbers start from the same per-voxel error, estimate - truth; one is a "
                        "root-mean-square, the other a plain mean, and both are divided by the same quantity "
                        "(the notebook's NRMSE definition says which).",
           why="both are divided by the mean truth, so Dp, Dt and Fp errors can share one axis.")
def _check_05_2(answer):
    from .compare import score

    estimate, truth = _lsq_case_05()
    rows = score({"LSQ": estimate}, truth)
    off = []
    for row in rows:
        p = row["param"]
        result = _call(answer, getattr(estimate, p), getattr(truth, p), what="nrmse_and_bias(estimate, truth)")
        values = _numbers(result, (2,), "a pair (nrmse, bias)")
        for k, name in enumerate(("nrmse", "bias")):
            if not np.isclose(values[k], row[name], rtol=1e-6, atol=1e-12):
                off.append(f"{p} {name} {values[k]:.4g}, iv.score says {row[name]:.4g}")
    return ("on least squares at SNR 20: " + "; ".join(off) + ".") if off else None


@_exercise("05.3", hint="Spearman's rho is the Pearson correlation of the ranks (np.corrcoef of the ranks); tied "
                        "values (estimates on a bound) share their average rank: scipy.stats.rankdata.",
           why="rho_Dp_Fp far from 0 means the estimator couples Dp and Fp: the truths are independent.",
           question={
               "a": ("Spearman's rho is always larger than Pearson's", "not true: for a straight-line relation "
                     "with no pile they are nearly equal, and either can be the larger."),
               "d": ("a rank correlation depends only on the order of the values: a pile on a bound becomes one "
                     "tied rank, and a relation bent by the bound counts as fully as a straight one, while "
                     "Pearson's is pulled by the pile's extreme values", None),
               "c": ("Pearson's correlation cannot be computed when values repeat", "it can: np.corrcoef "
                     "handles repeated values; only a constant array has no correlation."),
               "b": ("ranking removes the noise from the estimates", "ranks keep the noise: two noisy "
                     "estimates swap ranks just as they swap values."),
           })
def _check_05_3(answer):
    from ..core.metrics import spearman

    estimate, truth = _lsq_case_05()
    off = []
    for a, b, pair in ((estimate.Dp, estimate.Fp, "estimated Dp vs Fp"), (estimate.Dt, truth.Dt, "Dt vs truth")):
        value = _number(_call(answer, a, b, what="my_spearman(a, b)"), "a correlation")
        expected = spearman(a, b)
        if not np.isclose(value, expected, rtol=1e-6, atol=1e-9):
            off.append(f"{pair}: {value:.4g}, iv.spearman says {expected:.4g}")
    return ("on least squares at SNR 20: " + "; ".join(off) + ".") if off else None


# ----------------------------------------------------------------------------- 06 beyond

#: Exercise 06.2: the simulated set (voxels, sigma: SNR 20, seed) and "on a bound" (relative distance).
_SET_06, _ON_BOUND_06 = (2000, 0.05, 0), 0.01
#: Exercise 06.3: low-perfusion voxels (as notebook 06), their noise (SNR 100), seed and the coarse Bayes grid.
_LOW_FP_06, _SET_06B, _GRID_06 = (0.02, 0.1), (500, 0.01, 5), (12, 12, 12)


@_exercise("06.1", hint="each output is lo + sigmoid(x)·(hi - lo) with (lo, hi) from iv.FIT_BOUNDS, and "
                        "sigmoid(0) = 0.5.",
           why="a bounded network can only answer inside its bounds; one that has learned nothing answers their "
               "middle, not 0.")
def _check_06_1(answer):
    import torch

    from ..nets.networks import IVIMNetOptim
    from ..core.signal_model import SEED_B_VALUES

    net = IVIMNetOptim(SEED_B_VALUES).eval()
    with torch.no_grad():
        for p in net.encoder[-1].parameters():  # the last layer outputs 0 for every input
            p.zero_()
        expected = net.encode(torch.ones(1, len(SEED_B_VALUES)))[0].numpy().astype(float)
    values = _numbers(answer, (4,), "(Dp, Dt, Fp, S0)")
    names = ("Dp", "Dt", "Fp", "S0")
    off = [f"{n}: {_off(v, e, tol=1e-6 * e)}" for n, v, e in zip(names, values, expected) if _off(v, e, tol=1e-6 * e)]
    return "; ".join(off) or None  # float32 network vs float64 arithmetic


@_exercise("06.2", hint="fit the signals with iv.fit_lsq, then ask of every Dp estimate whether it lies within "
                        "1 % of either end of iv.FIT_BOUNDS['Dp']; the share is the mean of that yes/no array "
                        "(np.isclose takes an rtol).",
           why="a bounded fit parks the voxels whose data say nothing about Dp on its bounds: those are not "
               "measurements, and they inflate the NRMSE.")
def _check_06_2(answer):
    from ..classical.fit import fit_lsq
    from ..core.signal_model import FIT_BOUNDS, SEED_B_VALUES
    from ..simulation.simulate import training_data

    n, sigma, seed = _SET_06
    signals, _ = training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed)
    dp = fit_lsq(signals, SEED_B_VALUES).Dp
    lo, hi = FIT_BOUNDS["Dp"]
    expected = float(np.mean(np.isclose(dp, lo, rtol=_ON_BOUND_06) | np.isclose(dp, hi, rtol=_ON_BOUND_06)))
    value = _number(answer, "a fraction between 0 and 1")
    if value > 1:
        return f"{value} is above 1: give a fraction, not a percentage or a count."
    return _off(value, expected, tol=5 / n)  # the estimates pile up on the bound: 'how close' moves a few voxels


@lru_cache(maxsize=1)
def _low_perfusion_06():
    from ..classical.fit import fit_bayes, fit_lsq
    from ..core.metrics import normalised_bias
    from ..core.signal_model import PARAMETER_BOX, SEED_B_VALUES
    from ..simulation.simulate import training_data

    n, sigma, seed = _SET_06B
    signals, truth = training_data(n, SEED_B_VALUES, sigma=sigma, seed=seed, box={**PARAMETER_BOX, "Fp": _LOW_FP_06})
    lsq = fit_lsq(signals, SEED_B_VALUES)
    bayes = fit_bayes(signals, SEED_B_VALUES, sigma=sigma, grid=_GRID_06)
    return {"LSQ": normalised_bias(lsq.Fp, truth.Fp), "Bayes": normalised_bias(bayes.Fp, truth.Fp)}


@_exercise("06.3", hint="simulate exactly the voxels the exercise names (its box, seed and sigma), fit them "
                        "twice, once without a prior and once with fit_bayes's box prior, and compare each fit's "
                        "Fp with the truth the way the notebook's bias table does (iv.normalised_bias).",
           why="a prior pulls estimates towards its own box: Bayes (and a supervised network) overestimate Fp "
               "below the box; least squares assumes no prior.",
           question={
               "a": ("Bayes: its prior puts no weight outside the box (Fp 0.1-0.4), so where the data say little "
                     "the posterior mean is pulled into the box", None),
               "b": ("least squares: its bounds are the box", "fit_lsq's bounds are iv.FIT_BOUNDS (Fp 0-0.7), "
                     "far wider than the box, and it has no prior: its bias is the small one."),
               "c": ("Bayes: a grid of 12 points per parameter is too coarse", "a finer grid moves the answer "
                     "little; the pull comes from the prior's range, not its resolution."),
               "d": ("both equally: they see the same noise", "they see the same data but not the same "
                     "assumptions; only one of them assumes Fp lies in the box."),
           })
def _check_06_3(answer):
    expected = _low_perfusion_06()
    if not isinstance(answer, dict) or set(answer) != set(expected):
        raise _Wrong(f"expected a dict with keys {sorted(expected)}, got {answer!r:.80}.")
    off = [f"{method}: {_off(_number(answer[method]), e, tol=1e-4)}" for method, e in expected.items()
           if _off(_number(answer[method]), e, tol=1e-4)]  # deterministic; 1e-4 covers platform rounding
    return "; ".join(off) or None


# ----------------------------------------------------------------------------- 07 your own data


@lru_cache(maxsize=1)
def _volunteer_07():
    from .examples import load_example
    from ..imaging.mask import make_mask
    from ..imaging.nifti import load_dwi, load_mask

    ex = load_example("volunteer1")
    dwi, b_values, affine = load_dwi(ex.paths["dwi"], ex.paths["bvals"])
    body = make_mask(dwi, mask=load_mask(ex.paths["mask"], affine=affine), warn=False)
    return ex, dwi, b_values, body


@_exercise("07.1", hint="make the automatic mask with the package's mask function, then combine the two boolean "
                        "masks: which logical operation keeps a voxel that is in the first but not in the second?",
           why="an automatic mask is a guess: look at it (and count) before fitting.")
def _check_07_1(answer):
    from ..imaging.mask import make_mask

    _, dwi, _, body = _volunteer_07()
    expected = int(np.sum(make_mask(dwi, warn=False) & ~body))
    return _count_off(answer, expected, "voxels")


@lru_cache(maxsize=1)
def _fits_07():
    from ..imaging.image_fit import fit_volume
    from ..nets.networks import IVIMNet

    _, dwi, b_values, body = _volunteer_07()
    lsq = fit_volume(dwi, b_values, body, method="lsq", progress=False)
    untrained = fit_volume(dwi, b_values, body, method="ivimnet", net=IVIMNet(b_values, seed=0), progress=False)
    return lsq, untrained


@_exercise("07.2", hint="find the liver's label in ex.roi_names, build a boolean array of the voxels that carry "
                        "it and are in body, and take the median of least squares' Dt map over them.",
           why="a median ignores the few voxels pinned at a bound; that is why the ROI table uses medians.")
def _check_07_2(answer):
    from ..core.metrics import roi_medians

    ex, _, _, body = _volunteer_07()
    lsq, _ = _fits_07()
    liver = next(r for r in roi_medians(lsq.maps, ex.rois, ex.roi_names, mask=body) if r["roi"] == "liver")
    value = _number(answer, "a diffusion coefficient in mm²/s")
    if value > 0.1:
        return f"{value} looks like 10^-3 mm²/s: give Dt in mm²/s (about 0.001)."
    return _off(value, liver["Dt"], tol=1e-6 * liver["Dt"], unit=" mm²/s")


@_exercise("07.3", hint="every fit carries a residual map (.residual); compare the typical residual of the "
                        "untrained network with that of least squares over the same voxels, body (a median of "
                        "each, then their ratio; the notebook's untrained network is seed 0).",
           why="a collapsed network explains the signal far worse than least squares: the residual gives it "
               "away before any organ value does.")
def _check_07_3(answer):
    _, _, _, body = _volunteer_07()
    lsq, untrained = _fits_07()
    expected = float(np.median(untrained.residual[body]) / np.median(lsq.residual[body]))
    value = _number(answer, "a ratio of median residuals")
    return _off(value, expected, tol=1e-4 * expected)  # deterministic: float rounding only


#: Every exercise id, with the hint shown after a wrong answer.
EXERCISES = {exercise_id: exercise.hint for exercise_id, exercise in sorted(_REGISTRY.items())}
#: The exercises that also ask why, with their explanations to choose from: {id: {letter: explanation}}.
WHY_QUESTIONS = {exercise_id: {letter: text for letter, (text, _) in sorted(exercise.question.items())}
                 for exercise_id, exercise in sorted(_REGISTRY.items()) if exercise.question is not None}
