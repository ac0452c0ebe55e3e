"""iv.check_answer: every exercise refuses a wrong answer, says when there is none, and accepts a right one
computed here independently of ivim_demo.teaching.exercises (analytic where possible)."""
import copy

import numpy as np
import pytest
from scipy import stats

import ivim_demo as iv


def _right_01_2():  # the exact Rician mean (scipy), not a simulation
    clean = float(iv.ivim(1000.0, 0.05, 0.001, 0.2))
    return stats.rice.mean(clean / 0.05, scale=0.05) - clean


def _right_03_2():  # Rician mean of each region's b = 1000 signal, S + sigma^2 / 2S at these SNRs (20-80)
    clean = [float(iv.ivim(1000.0, r.Dp, r.Dt, r.Fp, r.S0)) for r in iv.PHANTOM_REGIONS]
    return [s + 15.0 ** 2 / (2 * s) for s in clean]


def _region_errors(estimate, truth, labels):
    return np.array([[abs(getattr(estimate, p)[labels == k].mean() - getattr(truth, p)[labels == k].mean())
                      / getattr(truth, p)[labels == k].mean() for p in iv.PARAMS] for k in range(3)])


def _nrmse_bias(e, t):
    return np.sqrt(np.mean((e - t) ** 2)) / np.mean(t), np.mean(e - t) / np.mean(t)


def _spearman(a, b):
    return np.corrcoef(stats.rankdata(a), stats.rankdata(b))[0, 1]


#: One right and one wrong answer per exercise; the right ones worked out here, not read from the module.
CASES = {
    "01.1": (3, 4),  # exp(-0.05 b) > 0.01 for b < 92: b = 10, 20, 60
    "01.2": (_right_01_2(), 0.0),  # the Gaussian intuition: no bias
    "01.3": (None, 0.5),
    "02.1": (3 * (3 * 3 + 3) + 3 * 3 + 3, 192),  # 3 hidden Linear(3, 3) + Linear(3, 3); 192 is the 8-b-value net
    "02.2": ((True, False), (False, True)),
    "02.3": (None, 0.01),  # sigma^2 alone ignores the normalisation by the noisy S(b=0)
    "03.1": ([19 * 19, 59 * 59 - 19 * 19, 100 * 100 - 59 * 59], [400, 3200, 6400]),
    "03.2": (_right_03_2(), [r.S0 for r in iv.PHANTOM_REGIONS]),
    "03.3": ([r.Dt for r in iv.PHANTOM_REGIONS], [1.5, 1.0, 0.5]),
    "04.1": ((0.001, 0.04, 0.8), (0.001, 0.04, 0.2)),
    "04.2": ([0.1 * (1 - np.exp(-60 * 0.02)) / (0.1 * (1 - np.exp(-60 * 0.02)) + 0.9 * (1 - np.exp(-60 * 0.0015))),
              0.2 * (1 - np.exp(-60 * 0.04)) / (0.2 * (1 - np.exp(-60 * 0.04)) + 0.8 * (1 - np.exp(-60 * 0.001))),
              0.3 * (1 - np.exp(-60 * 0.06)) / (0.3 * (1 - np.exp(-60 * 0.06)) + 0.7 * (1 - np.exp(-60 * 0.0005)))],
             [0.1, 0.2, 0.3]),
    "04.3": (_region_errors, lambda e, t, labels: _region_errors(e, t, labels) * 100),  # per cent, not a fraction
    "05.1": ([0.09 / np.sqrt(12) / 0.055, 0.0015 / np.sqrt(12) / 0.00125, 0.3 / np.sqrt(12) / 0.25],
             [0.09 / 0.055, 0.0015 / 0.00125, 0.3 / 0.25]),  # the range, not the SD of a uniform truth
    "05.2": (_nrmse_bias, lambda e, t: (np.sqrt(np.mean((e - t) ** 2)), np.mean(e - t))),  # not normalised
    "05.3": (_spearman, lambda a, b: np.corrcoef(a, b)[0, 1]),  # Pearson, not Spearman
    "06.1": ([(lo + hi) / 2 for lo, hi in iv.FIT_BOUNDS.values()], [0.0, 0.0, 0.0, 1.0]),  # abs(0) is not sigmoid(0)
    "06.2": (None, 0.0),
    "06.3": (None, {"LSQ": 0.0, "Bayes": 0.0}),
    "07.1": (None, 0),
    "07.2": (None, 1.0e-3),
    "07.3": (None, 1.0),
}


def test_every_exercise_has_a_case():
    assert set(CASES) == set(iv.EXERCISES)
    assert all(len(hint) > 20 for hint in iv.EXERCISES.values())


@pytest.mark.parametrize("exercise_id", sorted(CASES))
def test_none_says_not_answered(exercise_id, capsys):
    assert iv.check_answer(exercise_id, None) is False
    assert "not answered yet" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="not answered"):
        iv.check_answer(exercise_id, None, quiet=True)


@pytest.mark.parametrize("exercise_id", sorted(CASES))
def test_a_wrong_answer_is_refused_with_a_hint(exercise_id, capsys):
    wrong = CASES[exercise_id][1]
    assert iv.check_answer(exercise_id, wrong) is False
    out = capsys.readouterr().out
    assert "hint:" in out and "correct" not in out
    with pytest.raises(AssertionError, match=exercise_id):
        iv.check_answer(exercise_id, wrong, quiet=True)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("exercise_id", sorted(k for k, (right, _) in CASES.items() if right is not None))
def test_a_right_answer_is_accepted(exercise_id, capsys):
    right, why = CASES[exercise_id][0], WHY.get(exercise_id)
    assert iv.check_answer(exercise_id, right, why=why) is True
    assert capsys.readouterr().out.startswith(f"{exercise_id}: correct.")
    assert iv.check_answer(exercise_id, right, why=why, quiet=True) is True
    assert capsys.readouterr().out == ""


#: The right explanation of each exercise that asks why, worked out here (the physics in the question's comments).
WHY = {
    "01.3": "b",  # a rising decay is noise; the model cannot rise, so the fit drives Dt down
    "03.2": "c",  # at b = 1000 only (1 - Fp) e^(-b Dt) is left: the lowest Dt keeps the most signal
    "05.3": "d",  # ranks depend on order only
    "06.3": "a",  # the prior's box pulls the posterior mean
}


def test_why_questions_are_the_ones_asked():
    assert set(WHY) == set(iv.WHY_QUESTIONS)
    assert all(len(options) >= 3 for options in iv.WHY_QUESTIONS.values())


@pytest.mark.parametrize("exercise_id", sorted(WHY))
def test_a_why_question_needs_the_right_explanation(exercise_id, capsys):
    right = CASES[exercise_id][0]
    if exercise_id == "01.3":  # the share of rising decays, straight from the simulation
        s, _ = iv.training_data(10_000, iv.SEED_B_VALUES, sigma=0.05, seed=0)
        right = float(np.mean(s[:, 7] / s[:, 0] > s[:, 6] / s[:, 0]))
    elif exercise_id == "06.3":  # both fits, their normalised Fp bias
        s, truth = iv.training_data(500, iv.SEED_B_VALUES, sigma=0.01, seed=5, box={**iv.PARAMETER_BOX, "Fp": (0.02, 0.1)})
        fits = {"LSQ": iv.fit_lsq(s, iv.SEED_B_VALUES), "Bayes": iv.fit_bayes(s, iv.SEED_B_VALUES, sigma=0.01,
                                                                           grid=(12, 12, 12))}
        right = {k: float(np.mean(f.Fp - truth.Fp) / np.mean(truth.Fp)) for k, f in fits.items()}
    assert iv.check_answer(exercise_id, right) is False  # the number alone is not enough
    assert "now the why" in capsys.readouterr().out
    wrong = next(letter for letter in iv.WHY_QUESTIONS[exercise_id] if letter != WHY[exercise_id])
    assert iv.check_answer(exercise_id, right, why=wrong) is False
    out = capsys.readouterr().out
    assert f"({wrong}) does not hold:" in out and "correct" not in out
    assert iv.check_answer(exercise_id, right, why="z") is False
    assert "one of the letters" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="does not hold"):
        iv.check_answer(exercise_id, right, why=wrong, quiet=True)
    assert iv.check_answer(exercise_id, right, why=WHY[exercise_id].upper()) is True  # case does not matter


def test_the_monte_carlo_tolerance_is_honest():
    """01.2: any 100 000-draw estimate passes (other seeds), a bias off by a quarter does not."""
    clean = float(iv.ivim(1000.0, 0.05, 0.001, 0.2))
    for seed in range(5):
        draws = iv.add_rician_noise(np.full(100_000, clean), 0.05, seed)
        assert iv.check_answer("01.2", draws.mean() - clean, quiet=True)
    assert not iv.check_answer("01.2", 1.25 * _right_01_2())


def test_region_means_of_another_noise_draw_pass():
    """03.2 and 03.3 judge the physics, not one noise draw: the phantom with another seed passes."""
    dwi, _ = iv.phantom(sigma=15.0, seed=7)
    labels = iv.phantom_regions()
    means = {b: np.array([dwi[..., i][labels == k].mean() for k in range(3)])
             for i, b in enumerate(iv.SEED_B_VALUES) if b in (500, 1000)}
    assert iv.check_answer("03.2", means[1000.0], why=WHY["03.2"], quiet=True)
    assert iv.check_answer("03.3", np.log(means[500.0] / means[1000.0]) / 500, quiet=True)


def test_answers_of_the_wrong_kind_are_refused_without_a_traceback(capsys):
    for exercise_id, answer in [("01.1", "three"), ("01.1", 2.5), ("02.2", True), ("03.1", [1, 2]),
                                ("04.3", 42), ("05.3", lambda a, b: 1 / 0), ("06.3", [0.1, 0.2]), ("01.3", 12.0)]:
        assert iv.check_answer(exercise_id, answer) is False, (exercise_id, answer)
    out = capsys.readouterr().out
    assert "expected" in out and "ZeroDivisionError" in out and "Traceback" not in out


def test_an_unknown_exercise_is_a_value_error():
    with pytest.raises(ValueError, match="unknown exercise '08.1'.*01.1"):
        iv.check_answer("08.1", 1)


def test_the_state_dict_answer_matches_torch():
    """02.2 is right about torch itself: a state_dict shares storage with the live weights, a deepcopy does not."""
    import torch

    net = iv.IVIMNet(iv.SEED_B_VALUES)
    kept, copied = net.state_dict(), copy.deepcopy(net.state_dict())
    with torch.no_grad():
        net.encoder[0].weight.mul_(2.0)
    assert torch.equal(kept["encoder.0.weight"], net.encoder[0].weight)
    assert not torch.equal(copied["encoder.0.weight"], net.encoder[0].weight)


def test_the_box_guess_passes_when_simulated():
    """05.1 allows 5 %: guessing the box centre for 2000 simulated voxels passes, for any seed."""
    for seed in range(5):
        _, truth = iv.training_data(2000, seed=seed)
        guesses = [iv.nrmse(np.full(2000, np.mean(iv.PARAMETER_BOX[p])), getattr(truth, p)) for p in iv.PARAMS]
        assert iv.check_answer("05.1", guesses, quiet=True)


@pytest.mark.parametrize("exercise_id, wrong", [("01.2", 0.5), ("07.1", 5), ("03.1", [1, 2, 3]), ("02.1", 7)])
def test_feedback_does_not_give_the_answer_away(exercise_id, wrong, capsys):
    """A wrong answer hears that it is wrong (and, for a number, whether it is close), never in which direction or by
    how much: the answer must be computed, not found by bisection."""
    iv.check_answer(exercise_id, wrong)
    out = capsys.readouterr().out
    assert "hint:" in out
    for giveaway in ("too high", "too low", "too many", "too few", "off by"):
        assert giveaway not in out, (exercise_id, out)


@pytest.mark.parametrize("exercise_id", ["01.2", "02.3", "03.1", "05.2", "06.2", "06.3", "07.1", "07.2", "07.3"])
def test_hints_lead_rather_than_answer(exercise_id):
    """These hints used to be the solution's code; they now name the steps, not the calls that do them all."""
    hint = iv.EXERCISES[exercise_id]
    assert hint.count("(") <= 3 and "np.median(fits" not in hint and "return (" not in hint, hint
    assert not any(code in hint for code in (".sum()", " = ", "==", "& ~", "(labels")), hint  # no code to copy
