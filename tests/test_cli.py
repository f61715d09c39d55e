"""The `swapstream` entry point: dispatch, help and exit codes."""
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
