"""Bad input: one line on stderr naming the problem and the fix, exit 2, no traceback, and no
output folder left behind."""

from __future__ import annotations

import subprocess
import sys
import zipfile

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
