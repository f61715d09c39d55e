"""Distributed training on CPU: MirroredStrategy over two logical CPU devices (one autoencoder
method, one GAN method), and MultiWorkerMirroredStrategy with two worker processes on loopback.

Each case runs in a fresh process: the CPU must be split before TensorFlow starts.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("keras")

from tests.trainer_fixtures import make_pair  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)

CHILD = os.path.join(ROOT, "tests", "mirrored_child.py")


def _result(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(tmp_path):
    a, b = make_pair(tmp_path, count=12, size=32)
    proc = subprocess.run([sys.executable, CHILD, a, b, str(tmp_path / "runs")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    res = _result(proc)
    assert res["moved"] > 1e-3, res
    assert res["weight_diff"] < 1e-3 * res["moved"], res
    for method in ("vae-gan",):
        assert res[method] == {"replicas": 2, "step": 4, "loaded_step": 4}, res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multiworker_with_two_processes_on_loopback(tmp_path):
    a, b = make_pair(tmp_path, count=12, size=32)
    out = tmp_path / "run"
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                              "task": {"type": "worker", "index": index}}))
        cmd = [sys.executable, "-m", "swapstream.clients.cli", "train", "--method", "ae", "--preset", "tiny",
               "--a", a, "--b", b, "--out", str(out), "--steps", "4", "--checkpoint-every", "2",
               "--distribute", "multiworker", "--no-progress"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["step"] == 4 and summary["distribute"] == "multiworker"
    index = json.loads((out / "checkpoints" / "index.json").read_text())
    assert [e["step"] for e in index["checkpoints"]] == [2, 4]
    # Only the chief reported; the worker wrote nothing of its own.
    assert "run folder" in outputs[0][1] and "run folder" not in outputs[1][1]


def test_multiworker_needs_tf_config_and_steps(tmp_path, capsys):
    from swapstream.trainer.cli import main

    a, b = make_pair(tmp_path, count=4, size=32)
    env_backup = os.environ.pop("TF_CONFIG", None)
    try:
        args = ["--method", "ae", "--preset", "tiny", "--a", a, "--b", b, "--distribute", "multiworker"]
        assert main(args + ["--out", str(tmp_path / "r1"), "--steps", "2"]) == 2
        assert "TF_CONFIG" in capsys.readouterr().err
        assert main(args + ["--out", str(tmp_path / "r2"), "--minutes", "1"]) == 2
        assert "--steps" in capsys.readouterr().err
    finally:
        if env_backup is not None:
            os.environ["TF_CONFIG"] = env_backup
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_the_chief_is_read_from_tf_config_before_any_strategy(monkeypatch):
    from swapstream.faces.errors import InputError
    from swapstream.trainer.distribute import chief_in_cluster

    def chief(cluster, task_type, index):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))
        return chief_in_cluster("multiworker")

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert chief(workers, "worker", 0) and not chief(workers, "worker", 1)
    assert chief({"chief": ["127.0.0.1:3"], **workers}, "chief", 0)
    assert not chief({"chief": ["127.0.0.1:3"], **workers}, "worker", 0)
    assert chief_in_cluster("mirrored") and chief_in_cluster("none")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        chief_in_cluster("multiworker")
