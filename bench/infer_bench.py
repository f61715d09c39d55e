"""Per method: export cost, parity (fp32 and fp16) and inference time, onnxruntime vs Keras.

For each trainer method (built from its preset, random weights: speed and parity do not
depend on training) it converts the a2b inference model with the project's exporter, checks
parity on 16 crops for fp32 and fp16, and times one forward pass per face at batch 1 and 8:

  keras eager     model(x, training=False)
  keras tf.fn     tf.function(model) (graph mode, no XLA), traced once before timing
  ort fp32/fp16   onnxruntime CPU session on the exported graph
The four are timed round-robin (one call each, repeated) so background load hits all alike.

    .venv/bin/python bench/infer_bench.py [--methods ae,cyclegan] [--preset cpu] [--repeats 10]
"""
from __future__ import annotations

import argparse
import sys
import time


def _median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms per call of each function. The calls are interleaved round-robin so that load
    from other processes on a shared machine hits every variant alike."""
    import numpy as np

    for fn in fns.values():
        fn()  # warm-up (tracing, session arenas)
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[label].append((time.perf_counter() - t) * 1000)
    return {label: float(np.median(v)) for label, v in times.items()}


def bench_method(name: str, preset: str, repeats: int, size: int | None) -> dict:
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    from swapstream.exporter.convert import convert_keras
    from swapstream.exporter.fp16 import to_fp16
    from swapstream.exporter.parity import compare, keras_outputs, onnx_outputs, parity_faces
    from swapstream.trainer.methods import build_method, preset_config

    cfg = preset_config(name, preset, size=size)
    model = build_method(name, cfg).inference_model("a2b")
    row = {"method": name, "size": cfg.size, "params_m": model.count_params() / 1e6}
    t = time.perf_counter()
    proto32 = convert_keras(model)
    row["convert_s"] = time.perf_counter() - t
    proto16 = to_fp16(proto32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {p: ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                for p, m in (("fp32", proto32), ("fp16", proto16))}
    faces, _ = parity_faces(cfg.size)
    reference = keras_outputs(model, faces)
    for precision, sess in sessions.items():
        names = [o.name for o in sess.get_outputs()]
        got = onnx_outputs(sess, "face", names, faces, batch=8)
        row[f"parity_{precision}"] = compare(precision, reference, got, 0.0, "cpu", 0).max_abs

    graph_fn = tf.function(lambda x: model(x, training=False), autograph=False)
    for batch in (1, 8):
        x = np.random.default_rng(batch).random((batch, cfg.size, cfg.size, 3), dtype=np.float32)
        xt = tf.constant(x)
        fns = {"eager": lambda: model(xt, training=False), "tffn": lambda: graph_fn(xt),
               "ort_fp32": lambda: sessions["fp32"].run(None, {"face": x}),
               "ort_fp16": lambda: sessions["fp16"].run(None, {"face": x})}
        for label, ms in _median_ms(fns, repeats).items():
            row[f"{label}_b{batch}"] = ms / batch
    return row


def main(argv: list[str] | None = None) -> int:
    from swapstream.trainer.methods import METHODS, shared_preset_names

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="all", help="all, or some of " + ",".join(METHODS))
    parser.add_argument("--preset", default="cpu", help=" | ".join(shared_preset_names()))
    parser.add_argument("--size", type=int, default=None, help="override the preset's image size")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    names = list(METHODS) if args.methods == "all" else args.methods.split(",")
    print("| method | px | params | convert s | parity fp32 | parity fp16 | ms/face b1: eager / tf.function / "
          "ort fp32 / ort fp16 | ms/face b8: eager / tf.function / ort fp32 / ort fp16 | "
          "ort fp32 speed-up vs eager b1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = bench_method(name, args.preset, args.repeats, args.size)
        print(f"| {r['method']} | {r['size']} | {r['params_m']:.1f}M | {r['convert_s']:.1f} | "
              f"{r['parity_fp32']:.1e} | {r['parity_fp16']:.1e} | "
              f"{r['eager_b1']:.2f} / {r['tffn_b1']:.2f} / {r['ort_fp32_b1']:.2f} / {r['ort_fp16_b1']:.2f} | "
              f"{r['eager_b8']:.2f} / {r['tffn_b8']:.2f} / {r['ort_fp32_b8']:.2f} / {r['ort_fp16_b8']:.2f} | "
              f"{r['eager_b1'] / r['ort_fp32_b1']:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
