"""Export cost: swapstream's exporter against plain `tf2onnx.convert.from_keras`, same run.

Builds an ~88M-parameter 64 px autoencoder (encoder 128-256-512-1024 strided 5x5 convs,
dense 1120, pixel-shuffle decoder back up: big enough for from_keras's cost in time and memory
to show) and exports it once per variant, each in its own child process so that the child's
peak RSS (os.wait4's ru_maxrss) is that variant's alone:

  floor       build the model and run Keras once: the memory any variant needs anyway
  swapstream  exporter.export.export_model: convert, save, parity check, manifest
  from_keras  tf2onnx.convert.from_keras + save, then the same parity check

Prints wall time, peak RSS and parity (max |Keras - onnxruntime| over 16 crops) per variant,
and onnxruntime's latency on both exported files (same graph quality?).

CAUTION: from_keras peaks around 18 GB. It is skipped unless /proc/meminfo shows at least
20 GB available; --skip-baseline skips it outright.

    .venv/bin/python bench/export_bench.py [--skip-baseline] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
BASELINE_MIN_AVAILABLE_GB = 20.0


def build_model(size: int = SIZE, filters=(128, 256, 512, 1024), latent: int = 1120,
                decoder=(512, 256, 128), seed: int = 0):
    """The ~88M-parameter autoencoder (encoder + one decoder, as exported), deterministic."""
    import keras
    from keras import layers, ops

    keras.utils.set_random_seed(seed)

    def upscale(x, f):
        x = layers.Conv2D(f * 4, 3, padding="same")(x)
        x = layers.LeakyReLU(0.1)(x)
        return ops.depth_to_space(x, 2)

    face = keras.Input((size, size, 3), name="face")
    x = face
    for f in filters:
        x = layers.Conv2D(f, 5, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.1)(x)
    s = size // 2 ** len(filters)
    x = layers.Flatten()(x)
    x = layers.Dense(latent)(x)
    x = layers.Dense(s * s * filters[-1])(x)
    x = layers.Reshape((s, s, filters[-1]))(x)
    x = upscale(x, filters[-1] // 2)
    for f in decoder:
        x = upscale(x, f)
    out = layers.Conv2D(3, 5, padding="same", activation="sigmoid", name="swapped")(x)
    return keras.Model(face, out, name="probe_autoencoder")


# --- child side ---------------------------------------------------------------------------------

def _child(variant: str, out_dir: str) -> dict:
    t0 = time.perf_counter()
    model = build_model()
    import numpy as np

    from swapstream.exporter.parity import compare, keras_outputs, onnx_outputs, parity_faces

    faces, _ = parity_faces(SIZE)
    build_s = time.perf_counter() - t0
    info = {"variant": variant, "params": int(model.count_params()), "build_s": build_s}
    if variant == "floor":
        t = time.perf_counter()
        keras_outputs(model, faces)
        info["keras_16_faces_s"] = time.perf_counter() - t
        return info
    if variant == "swapstream":
        from swapstream.exporter.export import ExportSpec, export_model

        t = time.perf_counter()
        result = export_model(model, out_dir, ExportSpec("ae", "a2b", SIZE, 0.2), log=lambda m: None)
        info["export_s"] = time.perf_counter() - t
        info["stages_s"] = result.timings
        info["parity_max_abs"] = result.parity[0].max_abs
        info["onnx_path"] = os.path.join(out_dir, "model.onnx")
    elif variant == "from_keras":
        import tensorflow as tf
        import tf2onnx

        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "model.onnx")
        t = time.perf_counter()
        spec = [tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, name="face")]
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        convert_s = time.perf_counter() - t
        with open(path, "wb") as fh:
            fh.write(proto.SerializeToString())
        del proto
        info["export_s"] = time.perf_counter() - t
        info["stages_s"] = {"convert": convert_s}
        from swapstream.server.session import make_session

        session, provider = make_session(path, "cpu")
        actual = onnx_outputs(session, session.get_inputs()[0].name, None, faces, batch=8)
        info["parity_max_abs"] = compare("from_keras", keras_outputs(model, faces), actual, 1e-4,
                                         provider, 0).max_abs
        info["onnx_path"] = path
    else:
        raise SystemExit(f"unknown variant {variant}")
    info["onnx_mb"] = os.path.getsize(info["onnx_path"]) / 1e6
    info["ort_ms"] = _ort_latency(info["onnx_path"], np)
    return info


def _ort_latency(path: str, np) -> dict:
    """Median onnxruntime CPU latency (ms) per call at batch 1 and 8."""
    from swapstream.server.session import make_session

    session, _ = make_session(path, "cpu")
    name = session.get_inputs()[0].name
    out = {}
    for batch in (1, 8):
        x = np.random.default_rng(1).random((batch, SIZE, SIZE, 3), dtype=np.float32)
        session.run(None, {name: x})
        times = []
        for _ in range(5 if batch == 1 else 3):
            t = time.perf_counter()
            session.run(None, {name: x})
            times.append((time.perf_counter() - t) * 1000)
        out[f"batch{batch}"] = float(np.median(times))
    return out


# --- parent side --------------------------------------------------------------------------------

def _run_child(variant: str, out_dir: str) -> dict:
    """Run one variant in a fresh interpreter; return its report plus wall time and peak RSS."""
    fd, report = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", variant,
                             "--child-out", out_dir, "--child-report", report],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    stderr_tail = []
    for line in proc.stderr:  # drain, keep the tail for error reports
        stderr_tail = (stderr_tail + [line.decode(errors="replace")])[-20:]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        os.unlink(report)
        return {"variant": variant, "error": f"exit {proc.returncode}", "stderr": "".join(stderr_tail)}
    with open(report) as fh:
        info = json.load(fh)
    os.unlink(report)
    info["wall_s"] = wall
    info["peak_rss_gb"] = usage.ru_maxrss * 1024 / 1e9  # Linux reports KiB
    return info


def _available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-baseline", action="store_true", help="do not run from_keras (~18 GB peak)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--child-report", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        info = _child(args.child, args.child_out)
        with open(args.child_report, "w") as fh:
            json.dump(info, fh)
        return 0

    variants = ["floor", "swapstream"]
    if args.skip_baseline:
        print("from_keras: skipped (--skip-baseline)")
    elif _available_gb() < BASELINE_MIN_AVAILABLE_GB:
        print(f"from_keras: skipped, only {_available_gb():.1f} GB available "
              f"(it needs ~18 GB; want >= {BASELINE_MIN_AVAILABLE_GB:.0f} GB free)")
    else:
        variants.append("from_keras")
    results = []
    with tempfile.TemporaryDirectory(prefix="export-bench-") as work:
        for variant in variants:
            info = _run_child(variant, os.path.join(work, variant))
            results.append(info)
            if "error" in info:
                print(f"{variant}: FAILED {info['error']}\n{info['stderr']}")
                continue
            line = (f"{variant:<11} wall {info['wall_s']:6.1f} s  peak RSS {info['peak_rss_gb']:5.2f} GB"
                    f"  ({info['params'] / 1e6:.1f}M params)")
            if "export_s" in info:
                line += (f"  export {info['export_s']:6.1f} s  parity {info['parity_max_abs']:.2g}"
                         f"  onnx {info['onnx_mb']:.0f} MB  ort b1 {info['ort_ms']['batch1']:.1f} ms"
                         f"  b8 {info['ort_ms']['batch8']:.1f} ms")
            print(line, flush=True)
            if "stages_s" in info:
                print("            stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in info["stages_s"].items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
