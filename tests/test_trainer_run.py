"""`swapstream train` end to end at 32 px: run folder, load_run, resume after SIGKILL, bad input."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")

from swapstream.faces.align import AlignTemplate  # noqa: E402
from swapstream.faces.errors import InputError  # noqa: E402
from swapstream.trainer.cli import main  # noqa: E402
from swapstream.trainer.runs import load_run  # noqa: E402
from tests.trainer_fixtures import make_pair, synthetic_faces, write_face_set  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Drop the graphs and name counters of earlier tests (keeps later tracing fast)."""
    yield
    keras.backend.clear_session()


def _tree_digest(folder) -> dict:
    """{relative path: sha256} of every file under folder."""
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _train(*args) -> int:
    return main(["--preset", "tiny", "--no-progress", *map(str, args)])


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("sets"), count=16, size=32)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, sets):
    """An `ae` run of 20 steps with checkpoints at 10 and 20 (treat as read-only; copy it)."""
    out = tmp_path_factory.mktemp("runs") / "ae"
    assert _train("--method", "ae", "--a", sets[0], "--b", sets[1], "--out", out, "--steps", 20,
                  "--checkpoint-every", 10, "--preview-every", 10, "--log-every", 5) == 0
    return out


def _copy(run, tmp_path, name="run"):
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


@pytest.mark.slow
def test_run_folder_holds_config_checkpoints_previews_logs_summary(ae_run, sets):
    with open(ae_run / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    assert cfg["method"] == "ae" and cfg["model"]["size"] == 32 and cfg["model"]["upscale"] == 2
    assert cfg["data"]["a"] == os.path.abspath(sets[0]) and cfg["data"]["margin"] == 0.0
    # The faces' alignment template, for the exporter's manifest and the server's masks.
    default = AlignTemplate(size=32)
    assert cfg["data"]["align_template"] == {"size": 32, "eye_distance": default.eye_distance,
                                             "eye_line": default.eye_line}
    index = json.loads((ae_run / "checkpoints" / "index.json").read_text())
    assert [e["step"] for e in index["checkpoints"]] == [10, 20]
    assert sorted(os.listdir(ae_run / "checkpoints")) == [
        "ckpt-00000010.weights.h5", "ckpt-00000020.weights.h5", "index.json"]
    grid = cv2.imread(str(ae_run / "previews" / "preview.png"))
    assert grid.shape[0] == 4 * 128 and grid.shape[1] > 6 * 128  # rows A, A->B, B, B->A at 64 px, enlarged 2x
    assert (ae_run / "previews" / "step-00000010.png").is_file()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(ae_run / "logs"))
    summary = json.loads((ae_run / "summary.json").read_text())
    assert summary["step"] == 20 and summary["images_per_second"] > 0
    assert (summary["size"], summary["output_size"], summary["aligned"]) == (32, 64, True)
    assert summary["training_seconds"] == pytest.approx(summary["seconds"], abs=0.02)
    assert set(summary["final_losses"]) == {"loss", "l1"}
    assert summary["parameters"]["total"] > summary["parameters"]["inference"] > 0


@pytest.mark.slow
def test_load_run_gives_the_latest_weights_and_optimizer_state(ae_run):
    method = load_run(str(ae_run))
    assert method.step == 20 and method.ae_optimizer.iterations.numpy() == 20
    from swapstream.faces import regions

    assert method.run_config.template == method.template and method.template.size == 32
    faces = synthetic_faces(3, 2, 32, seed=9).astype(np.float32) / 255
    out = np.asarray(method.inference_model("a2b")(faces))
    assert out.shape == (2, 64, 64, 3)
    # Trained weights, not a fresh initialisation: reconstructions (inside the face region,
    # the only part the loss sees) beat an untrained model's.
    big = synthetic_faces(3, 2, 64, seed=9).astype(np.float32) / 255
    rec = np.asarray(method.inference_model("b2a")(faces))
    face = regions.face_mask(method.template, 64)[None, :, :, None]
    assert (np.abs(rec - big) * face).sum() / (3 * 2 * face.sum()) < 0.2


@pytest.mark.slow
def test_resume_after_sigkill_continues_step_and_optimizer_state(tmp_path, sets):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "swapstream.clients.cli", "train", "--method", "ae", "--preset", "tiny",
           "--a", sets[0], "--b", sets[1], "--out", str(out), "--steps", "100000",
           "--checkpoint-every", "5", "--preview-every", "1000", "--no-progress"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    index_path = out / "checkpoints" / "index.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if index_path.exists() and json.loads(index_path.read_text())["checkpoints"][-1]["step"] >= 5:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 120 s")
        time.sleep(0.3)  # land the kill at some point inside training, maybe mid-checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    saved = json.loads(index_path.read_text())["checkpoints"][-1]["step"]
    before = load_run(str(out))
    assert before.step == saved
    slots = [v.numpy() for v in before.ae_optimizer.variables if "momentum" in v.path]
    assert slots and any(np.abs(s).max() > 0 for s in slots)

    assert _train("--out", out, "--resume", "--steps", saved + 5, "--checkpoint-every", 5) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["start_step"] == saved and summary["step"] == saved + 5
    after = load_run(str(out))
    assert after.step == saved + 5 and int(after.ae_optimizer.iterations.numpy()) == saved + 5
    # Leftovers of the killed save (temporary files) are gone.
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".tmp-")]


@pytest.mark.slow
def test_resumed_run_adds_up_its_training_time(ae_run, tmp_path):
    run = _copy(ae_run, tmp_path)
    first = json.loads((run / "summary.json").read_text())
    assert _train("--out", run, "--resume", "--steps", 25) == 0
    second = json.loads((run / "summary.json").read_text())
    assert second["step"] == 25 and second["steps_this_session"] == 5
    assert second["training_seconds"] == pytest.approx(first["training_seconds"] + second["seconds"], abs=0.02)


@pytest.mark.slow
def test_resume_can_switch_precision_and_records_it(ae_run, tmp_path):
    run = _copy(ae_run, tmp_path)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["dtype_policy"] == "float32"
    assert _train("--out", run, "--resume", "--steps", 24, "--precision", "mixed_bfloat16") == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["dtype_policy"] == "mixed_bfloat16"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 24 and np.isfinite(summary["final_losses"]["loss"])


@pytest.mark.slow
def test_set_changes_a_new_runs_networks_and_is_refused_on_resume(ae_run, sets, tmp_path, capsys):
    run = tmp_path / "narrow"
    assert _train("--method", "ae", "--a", sets[0], "--b", sets[1], "--out", run, "--steps", 2,
                  "--set", "decoder_filters=8,4", "--set", "expression_weight=4",
                  "--set", "augment.rotation_deg=0") == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    model = config["model"]
    assert model["decoder_filters"] == [8, 4] and model["expression_weight"] == 4.0
    assert config["augment"]["rotation_deg"] == 0.0 and config["augment"]["zoom"] > 0
    narrow = json.loads((run / "summary.json").read_text())["parameters"]["decoder_a"]
    assert narrow < json.loads((ae_run / "summary.json").read_text())["parameters"]["decoder_a"]
    before = _tree_digest(run)
    capsys.readouterr()
    assert _train("--out", run, "--resume", "--steps", 4, "--set", "latent_dim=8") == 2
    assert "--set applies to a new run" in capsys.readouterr().err
    assert _tree_digest(run) == before


@pytest.mark.slow
def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(ae_run, tmp_path, capsys):
    run = _copy(ae_run, tmp_path)
    before = _tree_digest(run / "checkpoints")
    config_before = (run / "config.yaml").read_bytes()
    assert _train("--out", run, "--resume", "--steps", 40, "--lr", 1e30) == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "step 20" in err and "--lr" in err
    assert _tree_digest(run / "checkpoints") == before
    assert (run / "config.yaml").read_bytes() == config_before
    assert load_run(str(run)).step == 20


@pytest.mark.slow
def test_retries_give_up_after_the_last_one_and_keep_the_run_as_it_was(ae_run, tmp_path, capsys):
    run = _copy(ae_run, tmp_path)
    before = _tree_digest(run / "checkpoints")
    config_before = (run / "config.yaml").read_bytes()
    assert _train("--out", run, "--resume", "--steps", 40, "--lr", 1e30, "--retries", 2) == 2
    err = capsys.readouterr().err
    assert "retry 1 of 2: back to step 20 with 0.5 times" in err and "retry 2 of 2" in err
    assert err.count("diverged") == 3
    assert _tree_digest(run / "checkpoints") == before
    assert (run / "config.yaml").read_bytes() == config_before


@pytest.mark.parametrize("problem", ["missing set", "empty set", "same set", "framing differs", "bad size",
                                     "unknown method", "no budget", "bad batch"])
def test_bad_input_exits_2_and_writes_nothing(problem, sets, tmp_path, capsys):
    a, b = sets
    args = ["--method", "ae", "--a", a, "--b", b, "--steps", 2]
    if problem == "missing set":
        args[5] = str(tmp_path / "nope.npz")
    elif problem == "empty set":
        args[5] = write_face_set(tmp_path / "empty.npz", np.zeros((0, 32, 32, 3), np.uint8))
    elif problem == "same set":
        args[5] = a
    elif problem == "framing differs":  # an unaligned set beside an aligned one
        args[5] = write_face_set(tmp_path / "m.npz", synthetic_faces(5, 4, 32), margin=0.6, aligned=False)
    elif problem == "bad size":
        args += ["--size", 30]
    elif problem == "unknown method":
        args[1] = "autoencoder"
    elif problem == "no budget":
        args = args[:-2]
    elif problem == "bad batch":
        args += ["--batch", 0]
    out = tmp_path / "run"
    assert _train(*args, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("swapstream train: error: ") and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
def test_existing_run_is_not_overwritten(ae_run, tmp_path, sets, capsys):
    run = _copy(ae_run, tmp_path)
    before = _tree_digest(run)
    assert _train("--method", "ae", "--a", sets[0], "--b", sets[1], "--out", run, "--steps", 2) == 2
    assert "--resume" in capsys.readouterr().err
    assert _tree_digest(run) == before


def _truncate(run):
    path = run / "checkpoints" / "ckpt-00000020.weights.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_method(run, foreign):
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(foreign / "checkpoints", run / "checkpoints")


def _edit_config(run):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["encoder_filters"] = [8, 16, 48]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, sets):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert _train("--method", "vae", "--a", sets[0], "--b", sets[1], "--out", out, "--steps", 2) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("damage,message", [
    ("truncated", "truncated"),
    ("other method", "method 'vae'"),
    ("edited config", "does not fit"),
    ("no checkpoint", "no checkpoint yet"),
    ("no config", "config.yaml is missing"),
])
def test_damaged_runs_are_refused_and_left_alone(damage, message, ae_run, vae_run, tmp_path, capsys):
    run = _copy(ae_run, tmp_path)
    if damage == "truncated":
        _truncate(run)
    elif damage == "other method":
        _other_method(run, vae_run)
    elif damage == "edited config":
        _edit_config(run)
    elif damage == "no checkpoint":
        shutil.rmtree(run / "checkpoints")
    elif damage == "no config":
        os.unlink(run / "config.yaml")
    before = _tree_digest(run)
    with pytest.raises(InputError, match=message):
        load_run(str(run))
    assert _train("--out", run, "--resume", "--steps", 30) == (0 if damage == "no checkpoint" else 2)
    if damage != "no checkpoint":
        assert message.split()[0] in capsys.readouterr().err
        assert _tree_digest(run) == before


def _add_config_keys(run, **sections):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for section, values in sections.items():
        cfg[section].update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


# Keys of options that a run made by an older version may hold (the option has since been removed).
RETIRED = {"model": {"retired_weight": 0.0}, "augment": {"retired_share": 0.5}}


@pytest.mark.slow
def test_runs_with_removed_options_load_with_one_line_per_dropped_key(ae_run, tmp_path, capsys):
    """config.yaml of a run from before an option was removed: each key is dropped with one line
    on stderr, the run loads and resumes, and the rewritten config.yaml no longer holds it."""
    run = _copy(ae_run, tmp_path)
    _add_config_keys(run, **RETIRED)
    capsys.readouterr()
    assert load_run(str(run)).step == 20
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert "dropped model.retired_weight=0.0" in lines[0] and "dropped augment.retired_share=0.5" in lines[1]
    assert _train("--out", run, "--resume", "--steps", 22) == 0
    assert "dropped augment.retired_share" in capsys.readouterr().err
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert "retired_weight" not in cfg["model"] and "retired_share" not in cfg["augment"]
    assert load_run(str(run)).step == 22
    assert "dropped" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_whose_networks_needed_a_removed_option_is_refused_with_what_to_do(vae_run, tmp_path, capsys):
    """A removed option that shaped the networks (here: a first layer of other width): its
    checkpoints do not fit, and the message says why and how to go on."""
    run = _copy(vae_run, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["hidden"] = [cfg["model"]["hidden"][0] * 2]
    cfg["model"]["retired_input"] = "crop"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = _tree_digest(run)
    with pytest.raises(InputError, match="retired_input='crop'.*train a new run"):
        load_run(str(run))
    capsys.readouterr()
    assert _train("--out", run, "--resume", "--steps", 4) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "dropped model.retired_input='crop'" in err[0]
    assert err[1].startswith("swapstream train: error: ") and len(err) == 2 and "another version made it" in err[1]
    assert _tree_digest(run) == before


def test_load_run_of_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_run(str(tmp_path / "nothing"))


def _collapsing_session(tmp_path, sets, target_steps: int):
    """A tiny `ae` (compiled), its face pair, a session plan, and a callback that pushes the
    decoders' output layers into saturation at step 40 (what an oversized step does: the loss
    jumps and stays up without any NaN), the first time the run passes step 40 only."""
    from swapstream.trainer.data import load_face_pair
    from swapstream.trainer.loop import SessionPlan
    from swapstream.trainer.methods import build_method, preset_config

    class SaturateOutputs(keras.callbacks.Callback):
        fired = False

        def on_train_batch_end(self, batch, logs=None):
            if self.model.step == 40 and not SaturateOutputs.fired:
                SaturateOutputs.fired = True
                for decoder in (self.model.decoder_a, self.model.decoder_b):
                    last_conv = [layer for layer in decoder.layers if isinstance(layer, keras.layers.Conv2D)][-1]
                    # Saturated to black: far from the light synthetic skin the face-only loss sees.
                    last_conv.bias.assign(last_conv.bias - 50.0)

    pair = load_face_pair(sets[0], sets[1], 64)
    method = build_method("ae", preset_config("ae", "tiny"), template=pair.template)
    method.compile(method.default_optimizers())
    plan = SessionPlan(run_dir=str(tmp_path / "run"), target_steps=target_steps, minutes=None, log_every=5,
                       checkpoint_every=10, preview_every=1000, keep=20, images_per_step=8,
                       progress=False)
    return pair, method, plan, SaturateOutputs()


@pytest.mark.slow
def test_a_collapsing_loss_stops_training_and_keeps_the_checkpoint_from_before(tmp_path, sets):
    """Real training of the tiny `ae`, saturated at step 40: the guard stops it."""
    from swapstream.trainer.checkpoints import TrainingDiverged, latest_checkpoint
    from swapstream.trainer.data import AugmentConfig, make_dataset
    from swapstream.trainer.loop import run_session

    pair, method, plan, saturate = _collapsing_session(tmp_path, sets, target_steps=120)
    dataset = make_dataset(pair.faces_a, pair.faces_b, 4, AugmentConfig(), seed=0, input_size=32)
    with pytest.raises(TrainingDiverged, match="jumped") as err:
        run_session(method, dataset, plan, pair.faces_a[:2], pair.faces_b[:2], extra_callbacks=[saturate])
    assert "last good checkpoint (step 40)" in str(err.value)
    assert 40 < method.step < 60
    assert latest_checkpoint(plan.run_dir)["step"] == 40  # nothing saved after the jump


@pytest.mark.slow
def test_a_retry_goes_back_to_the_last_good_checkpoint_at_half_the_rate(tmp_path, sets):
    """The same collapse at step 40, once: with one retry the run goes back to step 40's
    checkpoint, halves the learning rate and trains on to its step target."""
    from swapstream.trainer.checkpoints import latest_checkpoint
    from swapstream.trainer.data import AugmentConfig, make_dataset
    from swapstream.trainer.loop import run_with_retries

    pair, method, plan, saturate = _collapsing_session(tmp_path, sets, target_steps=80)
    seeds = []

    def dataset_for(step, attempt):
        seeds.append((step, attempt))
        return make_dataset(pair.faces_a, pair.faces_b, 4, AugmentConfig(), seed=step + 7919 * attempt, input_size=32)

    result = run_with_retries(method, dataset_for, plan, pair.faces_a[:2], pair.faces_b[:2], retries=1,
                              extra_callbacks=[saturate])
    assert seeds == [(0, 0), (40, 1)]
    assert len(result.retries) == 1 and result.retries[0]["restored_step"] == 40
    assert 40 < result.retries[0]["diverged_at"] < 60 and result.retries[0]["learning_rate_scale"] == 0.5
    assert method.step == result.end_step == 80 and result.start_step == 0
    rate = float(keras.ops.convert_to_numpy(method.named_optimizer("ae").learning_rate))
    assert rate == pytest.approx(0.5 * method.config.learning_rate)
    assert latest_checkpoint(plan.run_dir)["step"] == 80
    assert result.final_losses["l1"] < 0.5  # trained on, not stuck in the collapse
