"""Which dtype policy a training run gets: --precision and the cpu preset's automatic choice."""
from __future__ import annotations

import json

import pytest

import swapstream.trainer.precision as precision
from swapstream.faces.errors import InputError
from swapstream.trainer.session import TrainRequest, _new_config


def _cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return str(path)


def test_bf16_instructions_are_read_off_the_flags_line(tmp_path):
    assert precision.cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_bf16 fma"))
    assert precision.cpu_has_bf16(_cpuinfo(tmp_path, "fpu avx2 amx_bf16 amx_tile"))
    assert not precision.cpu_has_bf16(_cpuinfo(tmp_path, "fpu sse2 avx2 avx512f avx512_vnni"))
    assert not precision.cpu_has_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_gives_bfloat16_only_to_a_cpu_that_has_it(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: native)
    assert precision.resolve_precision("auto", "float32") == ("mixed_bfloat16" if native else "float32")
    assert precision.resolve_precision("auto", "mixed_bfloat16") == "mixed_bfloat16"  # gpu preset
    assert precision.resolve_precision("float32", "mixed_bfloat16") == "float32"
    assert precision.resolve_precision("mixed_bfloat16", "float32") == "mixed_bfloat16"


def test_unknown_precision_is_refused():
    with pytest.raises(InputError, match="float32, mixed_bfloat16"):
        precision.resolve_precision("float16", "float32")


@pytest.mark.parametrize("native", [True, False])
def test_new_cpu_runs_choose_their_precision_and_tiny_runs_keep_float32(monkeypatch, tmp_path, native):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: native)

    def policy(**kw) -> str:
        req = TrainRequest(out=str(tmp_path / "run"), method="ae", a="a.npz", b="b.npz", **kw)
        return _new_config(req, chief=True).model.dtype_policy

    assert policy(preset="cpu") == ("mixed_bfloat16" if native else "float32")
    assert policy(preset="cpu", precision="float32") == "float32"
    assert policy(preset="tiny") == "float32"
    assert policy(preset="tiny", precision="mixed_bfloat16") == "mixed_bfloat16"


@pytest.mark.slow
def test_measure_times_a_method_in_each_precision(tmp_path, capsys):
    pytest.importorskip("keras")
    from swapstream.trainer.measure import main as measure
    from tests.trainer_fixtures import make_pair

    a, b = make_pair(tmp_path, count=8, size=32)
    out = tmp_path / "rows.json"
    assert measure(["--a", str(a), "--b", str(b), "--preset", "tiny", "--methods", "ae", "--steps", "1",
                    "--rounds", "1", "--precision", "float32,mixed_bfloat16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["precision"] for r in rows] == ["float32", "mixed_bfloat16"]
    assert all(r["method"] == "ae" and r["images_per_second"] > 0 for r in rows)
    table = capsys.readouterr().out
    assert "| ae | float32 | 32 | 64 |" in table and "| ae | mixed_bfloat16 | 32 | 64 |" in table
