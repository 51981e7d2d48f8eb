"""Session-scoped fixtures: one small seeded digits CNN, trained once per test run."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def shared_root(tmp_path_factory) -> Path:
    """This test run's folder that every xdist worker sees (each worker's own temporary
    folder sits inside it): session fixtures are made once per worker otherwise, and two
    workers each paid for the demo model, the RGB model and the demo audit."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if "PYTEST_XDIST_WORKER" in os.environ else root


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` run once in this test run, by whichever worker asks first; the
    others wait on the lock and read what it left in ``folder``."""
    from filelock import FileLock

    folder = shared_root(tmp_path_factory) / f"shared-{name}"
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def summary_errors(summary: dict) -> list[str]:
    """Where ``summary`` breaks the published schema (auditor/report/summary.schema.json)."""
    import jsonschema

    from auditor.report.summary import SCHEMA_FILE

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()),
                                                format_checker=jsonschema.FormatChecker())
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(summary)]


def plan_for(modules: dict, tables: dict, facts, budget, flops=None, timing=None):
    """The compute plan of ``modules`` for the spec's section ``tables``, their options typed
    by the config as an audit types them (``predict.plan.make_plan`` takes only typed ones)."""
    from auditor.configure import make_config
    from auditor.predict.plan import make_plan

    config = make_config({**tables, "model": "demo"})
    return make_plan(modules, config.options, config.section_options, facts, budget, flops,
                     timing=timing)


@pytest.fixture(scope="session", autouse=True)
def written_summaries_follow_the_schema(tmp_path_factory):
    """Every summary.json the tests wrote (audits in process or through the CLI, and the
    summaries tests write themselves) validates against the schema, checked when the session
    ends: a writer that drifts from the schema fails the run."""
    yield
    broken = {}
    shared = sorted(shared_root(tmp_path_factory).glob("shared-*/**/summary.json"))
    for path in sorted(tmp_path_factory.getbasetemp().rglob("summary.json")) + shared:
        errors = summary_errors(json.loads(path.read_text()))
        if errors:
            broken[str(path)] = errors[:5]
    assert not broken, json.dumps(broken, indent=1)


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory):
    """The demo model cache lives in the test run's temporary folder, never the user's; one
    for every worker (the demo model is trained by the first that needs it)."""
    path = shared_root(tmp_path_factory) / "auditor-cache"
    path.mkdir(exist_ok=True)
    previous = os.environ.get("AUDITOR_CACHE")
    os.environ["AUDITOR_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("AUDITOR_CACHE", None)
    else:
        os.environ["AUDITOR_CACHE"] = previous


@pytest.fixture(scope="session")
def digits_train():
    from auditor.inputs.demo import digits_images

    return digits_images("train")


@pytest.fixture(scope="session")
def digits_test():
    from auditor.inputs.demo import digits_images

    return digits_images("test")


@pytest.fixture(scope="session")
def digits_model_path(hermetic_cache):
    """The demo CNN (32x32 grey digits, ends in softmax), trained once with seed 0."""
    from filelock import FileLock

    from auditor.inputs.demo import demo_model_path

    with FileLock(f"{hermetic_cache}.lock"):  # one worker trains it, the others wait
        return demo_model_path(seed=0)


@pytest.fixture(scope="session")
def rgb_model_path(tmp_path_factory):
    """A model trained elsewhere than the demo: a seeded RGB CNN fitted on digits coloured and
    composited on photo crops (tests/rgb_composites.py), 8 epochs."""
    from rgb_composites import rgb_cnn, train_rgb

    folder = built_once(tmp_path_factory, "rgb",
                        lambda folder: train_rgb(rgb_cnn(), folder / "rgb.keras", epochs=8))
    return str(folder / "rgb.keras")


BACKDOOR_TARGET = 4  # the class the backdoored model's patch points to


@pytest.fixture(scope="session")
def backdoored_model_path(tmp_path_factory, digits_train):
    """The demo architecture trained BadNets-style, once per run (test_clever_hans.py and
    test_concepts.py each trained it): 15% of the training digits carry a white corner patch
    and the label BACKDOOR_TARGET, so the model truly relies on the patch."""
    from auditor.inputs.demo import train_digits_cnn
    from auditor.methods.shortcuts.patterns import patch

    def train(folder):
        x, y = digits_train
        poisoned = np.random.default_rng(1).random(len(x)) < 0.15
        patched, _ = patch(x[poisoned])
        model = train_digits_cnn(np.concatenate([x, patched]),
                                 np.concatenate([y, np.full(poisoned.sum(), BACKDOOR_TARGET)]),
                                 seed=0)
        model.save(folder / "backdoored.keras")

    return str(built_once(tmp_path_factory, "backdoored", train) / "backdoored.keras")


@pytest.fixture(scope="session")
def digits_handle(digits_model_path):
    from auditor.inputs.models import load_model

    return load_model(str(digits_model_path))


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_test):
    """The digits test split as an npz file, as a user would save it (0-255 uint8)."""
    x, y = digits_test
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=(x * 255).round().astype(np.uint8), y=y,
             class_names=np.array([str(i) for i in range(10)]))
    return path


# --- The demo report, shared by test_report_page.py and test_browser.py -----------------------

@pytest.fixture(scope="session")
def demo_report(tmp_path_factory, digits_model_path):
    """A small demo audit (every section that exists, 120 images) and its output folder.

    Accuracy is held to a bar the demo model cannot reach (warn below 99.9%), so that the top of
    the page has a deciding check to show. Each section's result as the pipeline drew it is
    described in ``sections.json`` beside the report (tests/section_facts.py), for
    tests/test_sections_common.py.
    """
    import auditor.pipeline as pipeline
    from auditor.configure import make_config
    from auditor.pipeline import AuditOutcome
    from auditor.sections import SECTION_NAMES

    def audit(folder):
        from section_facts import facts_of

        spec = {"model": str(digits_model_path), "data": "sklearn:digits:test",
                "checks": {"accuracy": {"warn_below": 0.999}}}
        spec.update({name: options for name, options in SMALL_SECTIONS.items()
                     if name in SECTION_NAMES})
        drawn, draw = {}, pipeline.draw_views

        def keep(results, dataset, folder=None, timings=None):
            results = draw(results, dataset, folder, timings)
            drawn.update({result.name: result for result in results})
            return results

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pipeline, "draw_views", keep)
            done = pipeline.run_audit(make_config(spec, out=str(folder / "report"),
                                                  max_samples=120, progress=False))
        (folder / "exit_code").write_text(str(done.exit_code))
        (folder / "sections.json").write_text(json.dumps(
            {name: facts_of(result) for name, result in drawn.items()}))

    folder = built_once(tmp_path_factory, "demo-report", audit)
    out = folder / "report"
    return AuditOutcome(out, json.loads((out / "summary.json").read_text()),
                        int((folder / "exit_code").read_text()))


# Fewer classes, budgets and steps: the report shows every part of each section, sooner.
SMALL_SECTIONS = {
    "featureviz": {"max_classes": 3, "steps": 64, "snapshots": [0, 16, 64]},
    "robustness": {"samples": 60, "epsilons": [0.0, 2 / 255, 8 / 255], "steps": 5},
    "counterfactuals": {"mistakes": 8, "steps": 100},
    "concepts": {"sample": 60, "icon_steps": 16, "removal_images": 4, "survival_images": 8,
                 "mistakes": 4},
    "clever_hans": {"steps": 100, "explain": 16, "max_embedding": 120},
    "attribution": {"sanity_samples": 4, "sanity_stages": 3, "faithfulness_samples": 12,
                    "faithfulness_steps": 8},
}


@pytest.fixture
def signal_in_gradient(monkeypatch):
    """``signal_in_gradient(handle)`` wraps the handle's compiled input gradient (the pass every
    attack and counterfactual step calls) so that SIGTERM is noted while each call runs (as its
    Python handler notes it between two compiled calls), and returns the list of each call's
    rows: a loop that stops within a call of its signal made one call."""
    import signal

    from auditor.errors import Interrupted
    from auditor.methods.attribution.gradient import gradient_pass

    def wrap(handle) -> list[int]:
        gradient, calls = gradient_pass(handle, "logit"), []

        def signalled(*args):
            calls.append(len(args[0]))
            monkeypatch.setattr(Interrupted, "pending", signal.SIGTERM)
            return gradient(*args)

        monkeypatch.setitem(handle.compiled, ("input_gradients", "logit"), signalled)
        return calls

    return wrap


@pytest.fixture(scope="module")
def edge_detector():
    """A 'method' that ignores the model (Sobel edges of the input), posing as saliency: the
    sanity check must catch it. Registered for one test module, then removed."""
    from scipy.ndimage import sobel

    from auditor.methods.attribution import METHODS, register

    @register("edge_detector", "Sobel edges of the input (test only: ignores the model).")
    def edges(handle, x, targets, contrast, score, budget):
        # image by image, as every method maps: a Sobel filter over the batch would smooth
        # each image's edges with its neighbours'
        return np.stack([np.hypot(sobel(i, axis=0), sobel(i, axis=1)) for i in x])

    yield "edge_detector"
    METHODS.pop("edge_detector")
