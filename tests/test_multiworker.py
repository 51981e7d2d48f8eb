"""``--strategy multiworker`` with two real worker processes on 127.0.0.1 and a standard
TF_CONFIG: the same summary.json figures as one process, only the chief writes, and a worker
that dies mid-audit ends the other with one line and nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CI": "true"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def audit_command(model: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "auditor", "audit", "--model", str(model), "--data",
            "sklearn:digits:test", "--max-samples", "100", "--format", "json", "--out", str(out),
            "--quiet", *more]


def start_workers(model: Path, out: Path, *more: str,
                  scratch: Path | None = None) -> list[subprocess.Popen]:
    """Two workers of one cluster, both given the same command and --out, as on two machines
    sharing a drive (a killed one's temporary files go to ``scratch``, not the shared one)."""
    cluster = [f"127.0.0.1:{port}" for port in free_ports(2)]
    if scratch is not None:
        scratch.mkdir()
    tmp = {"TMPDIR": str(scratch)} if scratch is not None else {}
    return [subprocess.Popen(
        audit_command(model, out, "--strategy", "multiworker", *more),
        env={**ENV, **tmp, "TF_CONFIG": json.dumps({"cluster": {"worker": cluster},
                                                    "task": {"type": "worker",
                                                             "index": index}})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]


def figures(summary: dict) -> dict:
    return {"n": summary["data"]["n"], "accuracy": summary["metrics"]["accuracy"],
            "per_class": summary["metrics"]["per_class"],
            "mistakes": summary["misclassifications"]["count"],
            "checks": {c["id"]: (c["status"], c["value"]) for c in summary["checks"]},
            "verdict": summary["verdict"]}


@pytest.mark.slow
def test_two_workers_give_the_single_process_figures_and_only_the_chief_writes(
        tmp_path, digits_model_path):
    out = tmp_path / "shared" / "run"
    workers = start_workers(digits_model_path, out, "--sections", "performance")
    single = subprocess.run(audit_command(digits_model_path, tmp_path / "single", "--sections",
                                          "performance"), env=ENV, capture_output=True,
                            text=True, timeout=600)
    ends = [worker.communicate(timeout=600) for worker in workers]
    assert [w.returncode for w in workers] == [single.returncode] * 2, ends
    assert ends[0][0].strip() == str(out / "summary.json")  # the chief says where it wrote
    assert ends[1][0] == "" and "the chief writes" in ends[1][1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # nothing else, no partial
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distribution"]["workers"] == 2 and summary["distribution"]["replicas"] == 2
    expected = figures(json.loads((tmp_path / "single" / "summary.json").read_text()))
    assert figures(summary) == expected


@pytest.mark.slow
def test_a_worker_that_dies_mid_audit_ends_the_other_in_one_line(tmp_path, digits_model_path):
    out = tmp_path / "shared" / "run"
    chief, worker = start_workers(digits_model_path, out, "--sections",
                                  "performance,attribution", scratch=tmp_path / "tmp")
    deadline = time.monotonic() + 300
    while not list(out.parent.glob(".run.partial-*/predictions.npz")):
        assert chief.poll() is None and time.monotonic() < deadline, chief.communicate()
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)  # its machine goes away mid-audit
    worker.communicate(timeout=60)
    stdout, stderr = chief.communicate(timeout=300)
    lines = stderr.strip().splitlines()
    assert chief.returncode == 2 and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: a worker of the multiworker run can no longer be reached")
    assert stdout == "" and "Traceback" not in stderr
    assert not out.parent.exists() or not list(out.parent.iterdir())  # nothing half-written
