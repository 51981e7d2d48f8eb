"""Bad input: one line on stderr naming the problem and the fix, exit 2, no traceback, and no
output folder left behind."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from auditor.cli import main


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Call the console entry point in-process, as `auditor ARGS...` would."""

    def run(*args: str):
        monkeypatch.setattr(sys, "argv", ["auditor", *args])
        with pytest.raises(SystemExit) as stop:
            main()
        captured = capsys.readouterr()
        return stop.value.code, captured.out, captured.err

    return run


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


def digits_like(n=12, shape=(32, 32)):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, *shape)).astype("float32"), rng.integers(0, 10, n)


def bad_inputs(tmp, model):
    """(name, CLI args, words the message must contain) for every bad input the issue lists."""
    x, y = digits_like()
    not_a_model = tmp / "notes.keras"
    not_a_model.write_text("this is not a model")
    wrong_zip = tmp / "archive.keras"
    with zipfile.ZipFile(wrong_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    text_h5 = tmp / "weights.h5"
    text_h5.write_text("not hdf5")
    pickle_file = tmp / "model.pkl"
    pickle_file.write_bytes(b"\x80\x04K\x01.")
    empty_class = tmp / "folder_with_empty_class"
    (empty_class / "a").mkdir(parents=True)
    nan_x = x.copy()
    nan_x[3, 0, 0] = np.nan
    spec_unknown = tmp / "unknown.toml"
    spec_unknown.write_text(f'model = "{model}"\nmodle = "typo"\n')
    spec_type = tmp / "wrongtype.toml"
    spec_type.write_text(f'model = "{model}"\nmax_samples = "ten"\n')
    spec_section = tmp / "section.toml"
    spec_section.write_text(f'model = "{model}"\n[contrastive]\nexampels = 3\n')
    data = ["--model", str(model), "--data"]
    return [
        ("missing model", ["--model", str(tmp / "nope.keras")], ["does not exist"]),
        ("text as .keras", ["--model", str(not_a_model)], ["not a Keras model file"]),
        ("zip as .keras", ["--model", str(wrong_zip)], ["cannot read model"]),
        ("text as .h5", ["--model", str(text_h5)], ["cannot read model"]),
        ("unknown extension", ["--model", str(pickle_file)], ["unknown extension '.pkl'"]),
        ("missing data folder", [*data, str(tmp / "nowhere")], ["does not exist"]),
        ("missing npz", [*data, f"npz:{tmp / 'nowhere.npz'}"], ["does not exist"]),
        ("empty dataset", [*data, write_npz(tmp / "empty.npz", x=x[:0], y=y[:0])], ["empty"]),
        ("empty class folder", [*data, str(empty_class)], ["has no images"]),
        ("shape cannot fit", [*data, write_npz(tmp / "flat.npz", x=x.reshape(12, -1), y=y)],
         ["shape", "(N, H, W"]),
        ("labels out of range", [*data, write_npz(tmp / "labels.npz", x=x, y=y + 10)],
         ["labels", "10 classes"]),
        ("NaN pixels", [*data, write_npz(tmp / "nan.npz", x=nan_x, y=y)], ["NaN", "1 image"]),
        ("npz without y", [*data, write_npz(tmp / "noy.npz", x=x)], ["no array 'y'"]),
        ("npz without x", [*data, write_npz(tmp / "nox.npz", images=x, y=y)], ["no array 'x'"]),
        ("unknown scheme", [*data, "s3:bucket/data"], ["unknown data scheme 's3:'"]),
        ("unknown section", ["--model", str(model), "--sections", "performance,magic"],
         ["unknown section 'magic'"]),
        ("spec unknown key", [str(spec_unknown)], ["unknown key 'modle'"]),
        ("spec wrong type", [str(spec_type)], ["'max_samples' must be int"]),
        ("section option typo", [str(spec_section)], ["unknown key 'contrastive.exampels'"]),
        ("missing spec", [str(tmp / "absent.toml")], ["does not exist"]),
        ("missing baseline", ["--model", str(model), "--baseline", str(tmp / "old")],
         ["no summary.json"]),
    ]


def test_every_bad_input_gets_one_clear_line_and_exit_2(tmp_path, digits_model_path, run_cli):
    for name, args, words in bad_inputs(tmp_path, digits_model_path):
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        code, stdout, stderr = run_cli("audit", *args, "--out", str(out), "--no-progress")
        lines = stderr.strip().splitlines()
        assert code == 2, f"{name}: exit {code}, stderr {stderr!r}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {stderr!r}"
        for word in words:
            assert word in lines[0], f"{name}: {word!r} not in {lines[0]!r}"
        assert "Traceback" not in stderr and stdout == ""
        assert not out.exists(), f"{name}: left {out}"
        assert not list(tmp_path.glob(f".{out.name}.partial-*")), f"{name}: left staging"


def test_usage_errors_are_one_line_too(run_cli):
    code, _, stderr = run_cli("audit", "--max-samples", "many")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "'many' is not a valid integer" in stderr
    code, _, stderr = run_cli("audit")
    assert code == 2 and "no model given" in stderr


def test_a_real_process_exits_2_without_traceback(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", "--model", str(tmp_path / "missing.keras"),
         "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: model '{tmp_path / 'missing.keras'}' does not exist; "
                                   "pass the path of a .keras or .h5 file or a SavedModel folder")
    assert not out.exists()


def test_compare_model_of_another_task_is_refused(tmp_path, digits_model_path, run_cli):
    import keras

    other = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    other.save(tmp_path / "other.keras")
    code, _, stderr = run_cli("audit", "--model", str(digits_model_path), "--compare-model",
                              str(tmp_path / "other.keras"), "--out", str(tmp_path / "out"))
    assert code == 2 and "compare models of one task" in stderr
    assert not (tmp_path / "out").exists()


# --- The red-team list (issue 18): every case a demanding new user tried -----------------------

def one_line_error(code, stdout, stderr, *words):
    """Exit 2, one line on stderr naming the problem, no traceback, nothing on stdout."""
    lines = stderr.strip().splitlines()
    assert code == 2, f"exit {code}, stderr {stderr!r}"
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and stdout == ""
    assert "function_node" not in stderr and "IteratorGetNext" not in stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder):
    """Every file under ``folder`` with its bytes: what the user owns, to compare after."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def save_images(folder, images, names):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names, strict=True):
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / name)


@pytest.fixture(scope="module")
def digit_images():
    """A few real digits (32x32 grey, 0-1) of each class, for folder sources."""
    from auditor.inputs.demo import digits_images

    x, y = digits_images("test")
    return {c: x[y == c][:4] for c in range(10)}


def audit_args(model, out, *more):
    return ["audit", "--model", str(model), "--out", str(out), "--sections", "performance",
            "--max-samples", "40", "--no-progress", *more]


def red_team_inputs(tmp, model):
    """(name, CLI args after --model/--out, words the one line must contain): the bad inputs
    that once gave a traceback, a misleading message or a silently wrong audit."""
    x, y = digits_like()
    text_npz = tmp / "notes.npz"
    text_npz.write_text("x,y\n1,2\n")
    npy = tmp / "array.npz"
    np.save(tmp / "array.npy", x)
    (tmp / "array.npy").rename(npy)
    ab = tmp / "ab"
    for name in ("a_zero", "b_one"):
        save_images(ab / name, x[:2, ..., None], ["0.png", "1.png"])
    twelve = tmp / "twelve"
    save_images(twelve / "12", x[:2, ..., None], ["0.png", "1.png"])
    strict_spec = tmp / "strict.toml"
    strict_spec.write_text(f'model = "{model}"\ndata = "{tmp / "broken_folder"}"\n'
                           "strict_data = true\n")
    broken = tmp / "broken_folder"
    save_images(broken / "3", x[:2, ..., None], ["0.png", "1.png"])
    (broken / "3" / "empty.png").write_bytes(b"")
    obj_names = np.empty(10, dtype=object)
    obj_names[:] = [f"c{i}" for i in range(10)]
    obj_y = np.empty(12, dtype=object)
    obj_y[:] = list(y)
    return [
        ("string labels", ["--data", write_npz(tmp / "str.npz", x=x, y=np.array(
            [f"class{v}" for v in y]))], ["labels that are text", "class_names=names"]),
        ("object labels", ["--data", write_npz(tmp / "obj.npz", x=x, y=obj_y)],
         ["'y' as Python objects", "np.asarray(y, dtype=np.int64)"]),
        ("object class_names", ["--data", write_npz(tmp / "objnames.npz", x=x, y=y,
                                                    class_names=obj_names)],
         ["'class_names' as Python objects"]),
        ("wrong-length class_names", ["--data", write_npz(tmp / "three.npz", x=x, y=y,
                                                          class_names=np.array(["a", "b"]))],
         ["2 class_names", "10 classes"]),
        ("text file as npz", ["--data", f"npz:{text_npz}"], ["not an .npz archive", "np.savez"]),
        (".npy file as npz", ["--data", f"npz:{npy}"], ["single .npy array", "np.savez"]),
        ("0-255 data stated 0-1", ["--data", write_npz(tmp / "u8.npz", x=(x * 255).astype(
            np.uint8), y=y), "--data-range", "0-1"], ["pixel values up to", "--data-range 0-255"]),
        ("0-1 data stated 0-255", ["--data", write_npz(tmp / "f01.npz", x=x, y=y),
                                   "--data-range", "0-255"], ["--data-range 0-1"]),
        ("data in -1..1", ["--data", write_npz(tmp / "pm1.npz", x=x * 2 - 1, y=y)],
         ["(x + 1) / 2"]),
        ("empty --sections", ["--data", "sklearn:digits", "--sections", ""],
         ["no section given", "performance"]),
        ("folders that are neither names nor indices", ["--data", str(ab)],
         ["a_zero, b_one", "class index"]),
        ("folder index past the model's classes", ["--data", str(twelve)],
         ["'12'", "10 classes"]),
        ("unreadable file with --strict-data", ["--data", str(broken), "--strict-data"],
         ["empty file (0 bytes)", "--strict-data"]),
        ("strict_data in the spec", [str(strict_spec)], ["empty file (0 bytes)"]),
    ]


def test_red_team_inputs_get_one_line_and_exit_2(tmp_path, digits_model_path, run_cli):
    for name, args, words in red_team_inputs(tmp_path, digits_model_path):
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        spec_first = args[0].endswith(".toml")
        command = (["audit", args[0], "--out", str(out), "--no-progress", *args[1:]]
                   if spec_first else
                   ["audit", "--model", str(digits_model_path), "--out", str(out),
                    "--no-progress", *args])
        code, stdout, stderr = run_cli(*command)
        line = one_line_error(code, stdout, stderr, *words)
        assert "set data_range" not in line, f"{name}: {line}"
        assert not out.exists(), f"{name}: left {out}"
        assert not list(tmp_path.glob(f".{out.name}.partial-*")), f"{name}: left staging"


def test_a_custom_layer_that_cannot_be_imported_is_named(tmp_path, run_cli):
    import keras

    @keras.saving.register_keras_serializable(package="redteam")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    model = keras.Sequential([keras.Input((8, 8, 1)), Doubler(), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().pop("redteam>Doubler")  # as in a fresh process
    code, stdout, stderr = run_cli("audit", "--model", str(tmp_path / "custom.keras"),
                                   "--out", str(tmp_path / "out"))
    one_line_error(code, stdout, stderr, "custom class 'Doubler'", "built-in layers")
    assert not (tmp_path / "out").exists()


# --- --out: nothing the user owns is ever deleted or overwritten -------------------------------

def test_out_holding_user_files_is_refused_and_kept(tmp_path, digits_model_path, run_cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = snapshot(mine)
    one_line_error(*run_cli(*audit_args(digits_model_path, mine)), "not an auditor run")
    assert snapshot(mine) == before


def test_out_holding_the_audited_model_is_refused(tmp_path, digits_model_path, run_cli):
    folder = tmp_path / "work"
    folder.mkdir()
    model = folder / "model.keras"
    model.write_bytes(digits_model_path.read_bytes())
    one_line_error(*run_cli(*audit_args(model, folder)), "holding the model")
    one_line_error(*run_cli(*audit_args(model, tmp_path)), "holding the model")
    assert model.read_bytes() == digits_model_path.read_bytes()


def test_out_that_is_a_file_is_refused_and_kept(tmp_path, digits_model_path, run_cli):
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    one_line_error(*run_cli(*audit_args(digits_model_path, file)), "existing file")
    one_line_error(*run_cli(*audit_args(digits_model_path, file / "run")), "which is a file")
    assert file.read_text() == "keep me"


def test_out_where_nothing_can_be_written_is_refused(tmp_path, digits_model_path, run_cli):
    import tempfile

    try:
        tempfile.TemporaryDirectory(dir="/sys").cleanup()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    one_line_error(*run_cli(*audit_args(digits_model_path, "/sys/auditor-run")),
                   "cannot write in '/sys'")


def test_out_on_a_read_only_file_system_is_refused(tmp_path, digits_model_path):
    """A real read-only mount, in a private mount namespace so that nothing leaks."""
    import shutil

    if not shutil.which("unshare"):
        pytest.skip("no unshare(1)")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f"mount -t tmpfs -o ro tmpfs {ro} || exit 77; exec {sys.executable} -m auditor "
              f"audit --model {digits_model_path} --out {ro}/run --no-progress")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          timeout=300)
    if done.returncode == 77 or "unshare failed" in done.stderr:
        pytest.skip("cannot mount a read-only file system here")
    one_line_error(done.returncode, done.stdout, done.stderr, "Read-only file system")


def test_an_earlier_run_is_replaced_and_a_changed_one_refused(tmp_path, digits_model_path,
                                                              run_cli):
    import json

    out = tmp_path / "run"
    code, _, stderr = run_cli(*audit_args(digits_model_path, out))
    assert code in (0, 1), stderr
    marker = json.loads((out / ".auditor-run.json").read_text())
    assert {"report.html", "summary.json", "summary.md", "junit.xml"} <= set(marker["files"])
    first = (out / "summary.json").read_text()
    code, _, stderr = run_cli(*audit_args(digits_model_path, out, "--seed", "1"))
    assert code in (0, 1), stderr
    assert (out / "summary.json").read_text() != first  # replaced by the new run
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "left a hidden folder"
    (out / "my-notes.txt").write_text("notes")
    one_line_error(*run_cli(*audit_args(digits_model_path, out)), "'my-notes.txt'",
                   "did not write")
    assert (out / "my-notes.txt").read_text() == "notes"
    assert (out / "summary.json").is_file()


def test_pages_never_replace_a_users_file(tmp_path, demo_report, run_cli):
    page = tmp_path / "page.html"
    page.write_text("<html>my own page</html>")
    one_line_error(*run_cli("compare", str(demo_report.out), str(demo_report.out),
                            "--out", str(page)), "auditor did not write it")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").write_text("my index")
    one_line_error(*run_cli("index", str(reports)), "auditor did not write it")
    assert page.read_text() == "<html>my own page</html>"
    assert (reports / "index.html").read_text() == "my index"


def test_watch_never_replaces_a_users_ledger(tmp_path, run_cli):
    (tmp_path / "checkpoints").mkdir()
    root = tmp_path / "reports"
    root.mkdir()
    (root / "watch.json").write_text('{"mine": true}')
    one_line_error(*run_cli("watch", str(tmp_path / "checkpoints"), "--once", "--settle", "0",
                            "--out", str(root), "--no-progress"), "not an auditor watch ledger")
    assert (root / "watch.json").read_text() == '{"mine": true}'


def test_watch_reports_root_that_is_a_file_is_refused(tmp_path, run_cli):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "reports").write_text("not a folder")
    one_line_error(*run_cli("watch", str(tmp_path / "checkpoints"), "--once", "--settle", "0",
                            "--out", str(tmp_path / "reports"), "--no-progress"), "is a file")
    assert (tmp_path / "reports").read_text() == "not a folder"


def test_demo_out_holding_user_files_is_refused(tmp_path, run_cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("chapter 1")
    one_line_error(*run_cli("demo", "--out", str(mine), "--no-progress"), "not an auditor run")
    assert (mine / "thesis.tex").read_text() == "chapter 1"


# --- Interruptions leave nothing behind --------------------------------------------------------

@pytest.mark.parametrize("signame, code", [
    ("SIGTERM", 143),
    pytest.param("SIGINT", 130, marks=pytest.mark.slow),  # the same path; a second audit
])
def test_an_interrupted_audit_leaves_nothing_behind(tmp_path, digits_model_path, signame, code):
    import os
    import signal
    import time

    scratch = tmp_path / "tmp"  # TensorFlow's autograph files go to tempfile.gettempdir()
    scratch.mkdir()
    out = tmp_path / "reports" / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "auditor", "audit", "--model", str(digits_model_path),
         "--data", "sklearn:digits:test", "--sections", "performance,attribution",
         "--out", str(out), "--quiet"],
        env={**os.environ, "TMPDIR": str(scratch)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (not list(out.parent.glob(".run.partial-*/predictions.npz"))
           and time.monotonic() < deadline):  # the run has started: predictions are written
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    time.sleep(1)  # into the sections
    assert process.poll() is None
    process.send_signal(getattr(signal, signame))
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == code, stderr
    assert stderr.strip() == (f"error: interrupted by {signame}; the run in progress was "
                              "removed, nothing half-written is left")
    assert not out.parent.exists() or not list(out.parent.iterdir())
    assert not list(scratch.iterdir()), "temporary files left behind"


# --- Bad files are skipped and reported, never fatal by default ------------------------------

def test_bad_files_are_skipped_and_listed(tmp_path, digits_model_path, digit_images, run_cli):
    import json
    import os

    data = tmp_path / "images"
    for c, images in digit_images.items():
        save_images(data / str(c), images, [f"{i}.png" for i in range(len(images))])
    good_jpeg = data / "3" / "good.jpg"
    from PIL import Image

    Image.fromarray((digit_images[3][0, ..., 0] * 255).astype(np.uint8)).save(good_jpeg)
    (data / "3" / "truncated.jpg").write_bytes(good_jpeg.read_bytes()[:60])
    good_jpeg.unlink()
    (data / "4" / "<img src=x onerror=alert(1)>.png").write_bytes(b"")  # 0 bytes
    os.symlink(tmp_path / "gone.png", data / "5" / "link.png")
    (data / "5" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    (data / "5" / ".DS_Store").write_bytes(b"junk")
    (data / "__MACOSX" / "5").mkdir(parents=True)
    (data / "__MACOSX" / "5" / "._1.png").write_bytes(b"junk")
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(*audit_args(digits_model_path, out, "--data", str(data),
                                               "--max-samples", "100"))
    assert code in (0, 1) and "Traceback" not in stderr, stderr
    summary = json.loads((out / "summary.json").read_text())
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in summary["data"]["skipped"]}
    assert set(skipped) == {"truncated.jpg", "<img src=x onerror=alert(1)>.png", "link.png"}
    assert "0 bytes" in skipped["<img src=x onerror=alert(1)>.png"]
    assert "broken link" in skipped["link.png"]
    assert summary["data"]["n"] == 40  # every readable image
    check = next(c for c in summary["checks"] if c["id"] == "data.skipped")
    assert check["status"] == "warn" and check["value"] == 3
    html = (out / "report.html").read_text()
    assert "3 files skipped" in html and "truncated.jpg" in html
    assert "<img src=x" not in html and "<img src=x" not in (out / "summary.md").read_text()


def test_folders_map_to_classes_by_index_and_name(tmp_path, digits_model_path, digit_images,
                                                  run_cli):
    import json

    sevens = tmp_path / "sevens"
    save_images(sevens / "7", digit_images[7], [f"{i}.png" for i in range(4)])
    code, _, stderr = run_cli(*audit_args(digits_model_path, tmp_path / "a", "--data",
                                          str(sevens)))
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["data"]["class_mapping"] == {"by": "index", "folders": {"7": 7}}
    assert summary["metrics"]["accuracy"] >= 0.75  # class 7, not class 0
    named = tmp_path / "named"
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for c in (2, 9):
        save_images(named / names[c], digit_images[c], [f"{i}.png" for i in range(4)])
    spec = tmp_path / "named.toml"
    spec.write_text(f'model = "{digits_model_path}"\ndata = "{named}"\nclass_names = {names!r}\n'
                    .replace("'", '"'))
    code, _, stderr = run_cli("audit", str(spec), "--out", str(tmp_path / "b"), "--sections",
                              "performance", "--no-progress")
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["data"]["class_mapping"]["folders"] == {"nine": 9, "two": 2}
    assert summary["metrics"]["accuracy"] >= 0.75


def test_a_folder_mapping_the_model_disagrees_with_warns(tmp_path, digits_model_path,
                                                         digit_images, run_cli):
    """Ten folders read by sorted position, but a_zero holds nines: the check says so."""
    import json

    data = tmp_path / "letters"
    for c in range(10):
        held = 9 if c == 0 else c
        save_images(data / f"{chr(97 + c)}_class", digit_images[held],
                    [f"{i}.png" for i in range(4)])
    run_cli(*audit_args(digits_model_path, tmp_path / "run", "--data", str(data)))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    check = next(c for c in summary["checks"] if c["id"] == "data.class_mapping")
    assert summary["data"]["class_mapping"]["by"] == "position"
    assert check["status"] == "warn" and "a_class" in check["message"]


# --- Names are escaped wherever they are written ----------------------------------------------

def test_markdown_and_junit_escape_names():
    from xml.etree import ElementTree as ET

    from auditor.report.summary import render_junit, render_markdown

    hostile = "<img src=x onerror=alert(1)>|*x*\x1b`"
    summary = {
        "verdict": "warn", "gated": True,
        "model": {"name": hostile, "params": 1, "sha256": "0" * 64, "path": hostile},
        "data": {"source": hostile, "n": 1}, "config": {}, "created": "",
        "checks": [{"id": "performance.recall", "status": "warn", "value": [hostile],
                    "baseline": None, "message": f"class '{hostile}' recall low",
                    "section": "performance", "threshold": {}}],
    }
    markdown = render_markdown(summary)
    import re

    prose = re.sub(r"(`+) .*? \1|(`+)[^`]*\2", "", markdown)  # code spans show HTML as text
    assert "<img" not in prose and "&lt;img src=x onerror=alert(1)&gt;" in prose
    table = [line for line in markdown.splitlines() if "performance.recall" in line][0]
    assert table.count(" | ") == 5  # the | in the name did not open a new cell
    suites = ET.fromstring(render_junit(summary).encode())  # parses: no raw control character
    assert hostile.replace("\x1b", "\ufffd") in suites.find(".//system-out").text


def _has_cjk_font() -> bool:
    import matplotlib.pyplot as plt

    from auditor.report import figures

    return figures.FONT_FAMILIES[-1] in plt.rcParams["font.family"]


@pytest.mark.skipif(not _has_cjk_font(), reason="no Noto Sans CJK font on this machine: "
                    "apt-get install -y fonts-noto-cjk (as .ci/run does)")
def test_cjk_class_names_are_drawn_not_boxes():
    import warnings

    import matplotlib.pyplot as plt

    from auditor.report import figures

    def draw(text):
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, text, fontsize=20, ha="center", va="center")
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
        plt.close(fig)
        return pixels

    assert "Noto Sans CJK JP" in plt.rcParams["font.family"], figures.FONT_FAMILIES
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would raise
        cat, dog = draw("猫"), draw("犬")
    assert not np.array_equal(cat, dog)  # two missing glyphs would be the same box


def test_an_interruption_python_swallows_prints_no_traceback():
    """A signal landing in a weakref callback: Python calls the unraisable hook instead of
    raising; the run re-raises it later from Interrupted.pending, so the hook stays silent."""
    from types import SimpleNamespace

    from auditor.cli import _hide_swallowed_interruptions
    from auditor.errors import Interrupted

    seen = []
    hook = _hide_swallowed_interruptions(seen.append)
    hook(SimpleNamespace(exc_value=Interrupted(2)))
    other = SimpleNamespace(exc_value=ValueError("a real bug"))
    hook(other)
    assert seen == [other]


def test_multi_label_heads_and_multi_hot_labels_are_one_line(tmp_path, run_cli, digits_model_path):
    """A multi-unit sigmoid head with one class per image, or multi-hot labels with a softmax
    model, are never audited as a softmax classifier: one line and exit 2 (tests/
    test_multilabel.py holds the other mismatches)."""
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="sigmoid")])
    model.save(tmp_path / "multilabel.keras")
    x = np.random.default_rng(0).uniform(0, 1, (6, 8, 8, 3)).astype("float32")
    data = write_npz(tmp_path / "single.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    code, stdout, stderr = run_cli("audit", "--model", str(tmp_path / "multilabel.keras"),
                                   "--data", data, "--out", str(tmp_path / "out"))
    one_line_error(code, stdout, stderr, "one class per image", "sigmoid outputs",
                   "multi-label")
    digits = np.random.default_rng(0).uniform(0, 1, (6, 32, 32)).astype("float32")
    hot = np.zeros((6, 10), np.int64)
    hot[np.arange(6), [0, 1, 2, 3, 4, 5]] = 1
    hot[0, 7] = 1  # one image with two labels
    data = write_npz(tmp_path / "multihot.npz", x=digits, y=hot)
    code, stdout, stderr = run_cli("audit", "--model", str(digits_model_path), "--data", data,
                                   "--out", str(tmp_path / "out2"))
    one_line_error(code, stdout, stderr, "multi-hot labels", "1 of 6 rows", "single-label")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_label_rows_that_are_not_one_hot_or_soft_labels_are_one_line(tmp_path, run_cli,
                                                                     digits_model_path):
    """Rows of counts or scores (a 2 in a row, rows not summing to 1) were read as their
    argmax, a silent class per image; soft labels that sum to 1 still read as their argmax."""
    digits = np.random.default_rng(0).uniform(0, 1, (6, 32, 32)).astype("float32")
    counts = np.eye(10, dtype=np.int64)[[0, 1, 2, 3, 4, 5]]
    counts[0, 0] = 2
    data = write_npz(tmp_path / "counts.npz", x=digits, y=counts)
    code, stdout, stderr = run_cli("audit", "--model", str(digits_model_path), "--data", data,
                                   "--out", str(tmp_path / "out"))
    one_line_error(code, stdout, stderr, "neither one-hot nor soft labels", "summing to 1")
    assert not (tmp_path / "out").exists()
    from auditor.inputs.datasets import _labels

    soft = np.full((2, 4), 0.1)
    soft[[0, 1], [2, 3]] = 0.7
    assert _labels(soft, "y").tolist() == [2, 3]
