"""The compute plan declares the functions the reliability card and the Clever Hans section trace
and the model copies they make, and what it declares is what happens: a trace of a large
model's gradient takes tens of seconds and a copy several, so an undercount is a budget
broken. tests/tracecount.py counts them while a real audit of a freshly loaded demo model runs
(tf.data's own small functions are not model traces and are left out)."""

from __future__ import annotations

import pytest
from tracecount import counting, model_traces, recorded_plans

from auditor.configure import make_config
from auditor.pipeline import run_audit

CARD_METHODS = ["gradient", "saliency", "gradcam", "occlusion", "integrated_gradients"]
SPEC = {
    "attribution": {"methods": CARD_METHODS, "sanity_samples": 2, "sanity_stages": 2,
                    "faithfulness_samples": 4, "faithfulness_steps": 4, "examples": 2},
    "clever_hans": {"shortcuts": ["patch"], "steps": 4, "explain": 8, "max_train": 40,
                    "max_eval": 40, "max_discovery": 40, "max_others": 10, "max_embedding": 40},
}


def test_the_card_and_clever_hans_trace_and_copy_what_the_plan_declares(
        digits_model_path, tmp_path, monkeypatch):
    plans = recorded_plans(monkeypatch)
    config = make_config(dict(SPEC), model=str(digits_model_path), data="sklearn:digits:test",
                         sections=["attribution", "clever_hans"], max_samples=60,
                         budget=10**9, format=["json"], out=str(tmp_path / "run"),
                         progress=False, quiet=True)
    with counting() as counts:
        run_audit(config)
    declared = plans[0].passes
    card, hans = "auditor/steps/card.py", "auditor/sections/clever_hans.py"
    # the card: 4 passes on the model (input gradient, layer gradient, logit scores, the
    # curves' softmax scores), 3 on the working copy and 3 on the shifted copy; two copies
    assert len(model_traces(counts, card)) == declared["card"].traces == 10
    assert counts.copies[card] == declared["card"].copies == 2
    # Clever Hans: the training step, the logits and the search's logits and features on the
    # working copy the card made; its methods' passes are the card's, traced already
    assert len(model_traces(counts, hans)) == declared["clever_hans"].traces == 3
    assert counts.copies[hans] == declared["clever_hans"].copies == 0


@pytest.mark.slow  # a second audit; the first test holds the same declaration with the card
def test_without_the_card_clever_hans_makes_the_working_copy_and_traces_its_methods(
        digits_model_path, tmp_path, monkeypatch):
    plans = recorded_plans(monkeypatch)
    config = make_config({"clever_hans": SPEC["clever_hans"]}, model=str(digits_model_path),
                         data="sklearn:digits:test", sections=["clever_hans"], max_samples=60,
                         budget=10**9, format=["json"], out=str(tmp_path / "run"),
                         progress=False, quiet=True)
    with counting() as counts:
        run_audit(config)
    declared = plans[0].passes["clever_hans"]
    hans = "auditor/sections/clever_hans.py"
    # + gradient's and Grad-CAM's passes on the copy, and the discovery's (gradient, no card)
    # on the model
    assert len(model_traces(counts, hans)) == declared.traces == 6
    assert counts.copies[hans] == declared.copies == 1
