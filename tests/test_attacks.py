"""FGSM and PGD on the demo CNN, the robustness section end to end, and model comparison."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import plan_for

from auditor.errors import AuditorError, ModelError
from auditor.methods.attacks import attack_curves, choose_targets, fgsm, pgd

EPSILONS = [0.0, 2 / 255, 8 / 255, 16 / 255, 32 / 255]


@pytest.fixture(scope="module")
def attacked(digits_test):
    """150 test images (every 5th) with their labels."""
    x, y = digits_test
    return x[::5][:150], y[::5][:150]


@pytest.fixture(scope="module")
def curves(digits_handle, attacked):
    x, y = attacked
    logits = np.asarray(digits_handle.logits_fn(x))
    targets = choose_targets(logits, y, "runner_up")
    return attack_curves(digits_handle, x, y, targets, EPSILONS, seed=0)


@pytest.fixture(scope="module")
def other_handle(digits_train, tmp_path_factory):
    """The demo architecture trained differently (another seed, fewer epochs)."""
    from auditor.inputs.demo import train_digits_cnn
    from auditor.inputs.models import load_model

    x, y = digits_train
    path = tmp_path_factory.mktemp("other") / "other.keras"
    train_digits_cnn(x, y, seed=1, epochs=3).save(path)
    return load_model(str(path))


def clean_accuracy(handle, x, y) -> float:
    return float((np.asarray(handle.logits_fn(x)).argmax(axis=1) == y).mean())


@pytest.mark.parametrize("epsilon", [1 / 255, 8 / 255, 32 / 255])
@pytest.mark.parametrize("targeted", [False, True])
def test_every_adversarial_image_stays_within_epsilon_and_the_valid_range(
        digits_handle, attacked, epsilon, targeted):
    x, y = attacked
    targets = (choose_targets(np.asarray(digits_handle.logits_fn(x)), y, "runner_up")
               if targeted else None)
    for adversarial in (fgsm(digits_handle, x, y, epsilon, targets=targets),
                        pgd(digits_handle, x, y, epsilon, targets=targets, seed=3)):
        assert adversarial.shape == x.shape
        assert np.abs(adversarial - x).max() <= epsilon + 1e-6
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
        assert np.abs(adversarial - x).max() > 0.5 * epsilon  # the attack did move pixels


def test_pgd_never_does_worse_than_fgsm_at_the_same_epsilon(curves):
    for fgsm_accuracy, pgd_accuracy in zip(curves.accuracy["fgsm"], curves.accuracy["pgd"],
                                           strict=True):
        assert pgd_accuracy <= fgsm_accuracy
    assert curves.accuracy["pgd"][-1] < 0.5  # at 32/255 the attack breaks most digits
    assert curves.accuracy["pgd"][-1] < curves.accuracy["fgsm"][-1]


def test_accuracy_at_epsilon_zero_equals_clean_accuracy(digits_handle, attacked, curves):
    x, y = attacked
    clean = clean_accuracy(digits_handle, x, y)
    assert curves.accuracy["fgsm"][0] == curves.accuracy["pgd"][0] == clean
    assert np.array_equal(pgd(digits_handle, x, y, 0.0), x)  # nothing may move at epsilon 0
    assert np.array_equal(fgsm(digits_handle, x, y, 0.0), x)


def test_accuracy_falls_as_epsilon_grows(curves):
    for name in ("fgsm", "pgd"):
        assert np.all(np.diff(curves.accuracy[name]) <= 0), name


def test_targeted_attacks_reach_the_target_more_often_as_epsilon_grows(curves):
    for name in ("fgsm", "pgd"):
        success = curves.targeted_success[name]
        assert np.all(np.diff(success) >= 0), (name, success)
        assert success[-1] > success[0] + 0.5, (name, success)


def test_a_fixed_target_class_attacks_only_the_other_classes(digits_handle, attacked):
    x, y = attacked
    targets = choose_targets(np.zeros((len(y), 10)), y, 3)
    assert np.all(targets[y == 3] == -1) and np.all(targets[y != 3] == 3)
    runner_up = choose_targets(np.asarray(digits_handle.logits_fn(x)), y, "runner_up")
    assert np.all(runner_up != y)
    aimed = y != 3

    def share_sent_to_3(adversarial):
        return (np.asarray(digits_handle.logits_fn(adversarial)).argmax(axis=1) == 3).mean()

    targeted = pgd(digits_handle, x[aimed], y[aimed], 32 / 255, targets=targets[aimed])
    untargeted = pgd(digits_handle, x[aimed], y[aimed], 32 / 255)
    assert share_sent_to_3(targeted) > max(0.3, 3 * share_sent_to_3(untargeted))


def test_bad_attack_arguments_are_clear_errors(digits_handle, attacked):
    x, y = attacked
    with pytest.raises(AuditorError, match="epsilon must be at least 0"):
        pgd(digits_handle, x[:2], y[:2], -0.1)
    with pytest.raises(AuditorError, match="target class 12"):
        choose_targets(np.zeros((2, 10)), y[:2], 12)


def test_saliency_agreement_is_one_for_a_model_with_itself_and_lower_for_another(
        digits_handle, other_handle, attacked):
    from auditor.methods.model_comparison import compare_saliency

    x, y = attacked
    itself = compare_saliency(digits_handle, digits_handle, x, y)
    assert np.allclose(itself.agreement, 1.0)
    assert all(v == pytest.approx(1.0) for v in itself.per_class(y, list("0123456789")).values())
    other = compare_saliency(digits_handle, other_handle, x, y)
    per_class = other.per_class(y, list("0123456789"))
    assert np.nanmean(other.agreement) < 0.9
    assert all(v < 0.95 for v in per_class.values())
    assert np.nanmean(other.agreement) > 0.0  # same task, same architecture: related maps


def test_models_that_read_different_images_cannot_be_compared(digits_handle, tmp_path):
    from auditor.inputs.demo import build_digits_cnn
    from auditor.inputs.models import load_model
    from auditor.methods.model_comparison import check_comparable

    path = tmp_path / "small.keras"
    build_digits_cnn(size=16).save(path)
    with pytest.raises(ModelError, match="inputs of shape"):
        check_comparable(digits_handle, load_model(str(path)))


def test_audit_with_compare_model_reports_robustness_and_gates_its_check(
        digits_model_path, other_handle, tmp_path):
    """Through the CLI: the contract keys, the comparison, the report, and a spec threshold."""
    from click.testing import CliRunner

    from auditor.cli import cli

    spec = tmp_path / "audit.toml"
    spec.write_text(
        "[robustness]\nsamples = 60\nepsilons = [0.0, 0.0157, 0.0627]\n"
        "check_epsilon = 0.0627\ngallery = 2\n"
        "[counterfactuals]\nmistakes = 4\nsteps = 60\ngallery = 2\n"
        "[checks.robustness.accuracy]\nfail_below = 0.99\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "audit", str(spec), "--model", str(digits_model_path), "--data", "sklearn:digits:test",
        "--max-samples", "300", "--sections", "counterfactuals,robustness",
        "--compare-model", other_handle.path,
        "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output  # the robustness threshold is broken
    summary = json.loads((out / "summary.json").read_text())
    robustness = summary["robustness"]
    assert robustness["attack"] == "pgd"
    assert robustness["epsilons"] == pytest.approx([0.0, 0.0157, 0.0627])
    assert len(robustness["accuracy"]) == len(robustness["targeted_success"]) == 3
    assert robustness["accuracy"][0] == pytest.approx(robustness["clean_accuracy"])
    comparison = robustness["comparison"]
    assert comparison["model"]["name"] == "other"
    assert 0 < comparison["agreement"] < 0.95 and len(comparison["per_class"]) == 10
    assert len(comparison["accuracy"]) == 3
    counterfactuals = summary["counterfactuals"]
    assert {"count", "success_rate", "mean_l2", "mean_l1", "saliency_agreement"} <= set(
        counterfactuals)
    check = next(c for c in summary["checks"] if c["id"] == "robustness.accuracy")
    assert check["status"] == "fail" and check["threshold"]["fail_below"] == 0.99
    html = (out / "report.html").read_text()
    assert 'id="robustness"' in html and 'id="counterfactuals"' in html
    assert "Compared with" in html and 'src="http' not in html


def test_bad_robustness_options_name_the_key():
    from auditor.errors import ConfigError
    from auditor.sections import robustness

    names = list("0123456789")
    assert robustness.resolve_target("7", names) == 7
    assert robustness.resolve_target("runner_up", names) == "runner_up"
    with pytest.raises(ConfigError, match="robustness.target"):
        robustness.resolve_target("banana", names)
    with pytest.raises(ConfigError, match="robustness.saliency_method"):
        robustness.run(None, robustness.Options(saliency_method="magic"))
    with pytest.raises(ConfigError, match="robustness.epsilons"):
        robustness.run(None, robustness.Options(epsilons=[0.0, 8.0]))
    grid = robustness.epsilon_grid(robustness.Options(epsilons=[0.0, 0.1], check_epsilon=0.05))
    assert grid == [0.0, 0.05, 0.1]


def test_a_shorter_curve_keeps_its_ends_and_the_check_s_epsilon():
    from auditor.predict.plan import REFERENCE_FLOPS, Facts
    from auditor.sections import robustness

    full = robustness.epsilon_grid(robustness.Options())
    assert len(full) == 7  # 0 and six attacked
    three = robustness.epsilon_grid(robustness.Options(curve_points=3))
    assert three == [0.0, full[1], 8 / 255, full[-1]]
    assert len(robustness.epsilon_grid(robustness.Options(curve_points=4))) == 5
    with pytest.raises(AuditorError, match="robustness.curve_points"):
        robustness.Options(curve_points=0)
    facts = Facts(images=1000, input_shape=(224, 224, 3), classes=10)
    plan = plan_for({"robustness": robustness}, {}, facts, "quick", REFERENCE_FLOPS)
    assert plan.settings["robustness"]["curve_points"] == 3
    assert plan.defaults["robustness"]["curve_points"] == 6
    short = plan_for({"robustness": robustness}, {"robustness": {"epsilons": [0.0, 0.1]}},
                      facts, "quick", REFERENCE_FLOPS)
    assert "curve_points" not in short.settings["robustness"]  # nothing to shorten


def test_a_signal_noted_during_an_attack_stops_it_after_that_step(digits_handle, attacked,
                                                                  signal_in_gradient):
    """SIGTERM's handler runs only between compiled calls: PGD stops after the step in which
    the signal came (its gradient call), for a single-label and a label-set attack alike."""
    from auditor.errors import Interrupted
    from auditor.methods.attacks import label_set_pgd

    x, y = attacked
    x, y = x[:4], y[:4]
    hot = (np.asarray(digits_handle.logits_fn(x)) >= 0).astype(np.float32)  # all right at first
    steps = signal_in_gradient(digits_handle)
    with pytest.raises(Interrupted):
        pgd(digits_handle, x, y, 0.05, steps=200)
    assert len(steps) == 1
    Interrupted.pending = None  # handled: the next attack starts afresh
    with pytest.raises(Interrupted):
        label_set_pgd(digits_handle, x, hot, np.zeros(10), 0.05, steps=200, random_start=False)
    assert len(steps) == 2


def test_the_curve_attacks_trace_nothing_and_leave_wrong_images_alone(digits_handle, attacked):
    """Every step of the attacks calls the model's traced logits and input gradient (the
    plan's timing traces both): no new trace; an image the model already gets wrong is its own
    adversarial example, never attacked."""
    from tracecount import counting

    x, y = attacked
    x, y = x[:20], y[:20]
    logits = np.asarray(digits_handle.logits_fn(x))
    wrong = logits.argmax(axis=1).copy()
    y = y.copy()
    y[:5] = (wrong[:5] + 1) % 10  # five images now wrong
    digits_handle.logits_fn(x[:1])
    attack_curves(digits_handle, x[:1], y[:1], np.full(1, -1), [0.0, 0.1], steps=1)
    with counting() as counts:
        curves = attack_curves(digits_handle, x, y, choose_targets(logits, y, "runner_up"),
                               [0.0, 4 / 255, 0.1], steps=3, keep_epsilon=0.1, logits=logits)
    assert sum(counts.traces.values()) == 0, counts.functions
    assert np.array_equal(curves.kept[:5], x[:5])  # wrong already: left as they were
    assert np.abs(curves.kept[5:] - x[5:]).max() > 0.05
    assert np.array_equal(curves.kept_logits.argmax(axis=1),
                          np.asarray(digits_handle.logits_fn(curves.kept)).argmax(axis=1))


def test_robustness_prices_the_rows_it_attacks_and_traces_nothing():
    """The images the model gets wrong are never attacked, so the price counts the right
    ones: two rows each (untargeted and targeted) per attacked epsilon, FGSM's one gradient
    call and PGD's ``steps`` at most, each call of the passes the plan's timing traced."""
    from auditor.predict.plan import Facts
    from auditor.sections import robustness

    options = robustness.Options(samples=50, steps=5, curve_points=3, gallery=0)
    facts = Facts(images=100, input_shape=(48, 48, 3), classes=10)
    unknown = robustness.passes(options, facts)
    all_right = robustness.passes(options, dataclasses.replace(facts, mistakes=0))
    half = robustness.passes(options, dataclasses.replace(facts, mistakes=50))
    assert unknown == all_right  # unknown mistakes: priced as if every image were attacked
    assert all_right.looped == 2 * 50 * 3 * (1 + 5) and all_right.loop_steps == 1 + 5
    assert half.looped == all_right.looped / 2 and half.forward == all_right.forward / 2
    assert all_right.traces == 0
    none_right = robustness.passes(options, dataclasses.replace(facts, mistakes=100))
    assert none_right.looped == none_right.loop_steps == 0
