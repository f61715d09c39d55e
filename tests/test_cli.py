"""The `swapstream` entry point: dispatch, help and exit codes."""
import os
import subprocess
import sys

from swapstream.clients import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_no_command_is_bad_usage(capsys):
    assert cli.main([]) == 2


def test_unknown_command_lists_valid_ones(capsys):
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "frobnicate" in err and "extract" in err


def test_console_script_runs_a_subcommand(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "swapstream.clients.cli", "extract", str(tmp_path / "none.mp4"),
                           "--out", str(tmp_path / "x.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def test_train_and_compare_help_list_the_registrys_methods_and_presets(capsys):
    from swapstream.trainer import cli as train_cli
    from swapstream.trainer import compare
    from swapstream.trainer.methods import METHODS

    helps = []
    for main in (train_cli.main, compare.main):
        assert main(["--help"]) == 0
        helps.append(" ".join(capsys.readouterr().out.split()))
    for out in helps:
        assert all(name in out for name in METHODS) and "tiny | cpu | gpu" in out, out
    assert "demo (ae)" in helps[0] and "demo" not in helps[1]


def test_train_reports_bad_input_in_one_line_without_tensorflows_start_up_noise(tmp_path):
    """TensorFlow is imported before this error; its load-time log lines must not precede it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a face set\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    proc = subprocess.run([sys.executable, "-m", "swapstream.clients.cli", "train", "--method", "ae",
                           "--a", str(notes), "--b", str(notes), "--out", str(tmp_path / "run"), "--steps", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"swapstream train: error: face set {notes} is not an .npz face set "
                                        "(make one with `swapstream extract`)"], proc.stderr
    assert not (tmp_path / "run").exists()
