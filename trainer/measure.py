"""Measure each method's training cost: parameters, images/s, time per step, input-pipeline cost.

    python -m swapstream.trainer.measure --a SET_A.npz --b SET_B.npz [--preset cpu] [--methods all|m1,m2]
                              [--steps 10] [--rounds 5] [--precision auto|float32|mixed_bfloat16[,...]]
                              [--set KEY=VALUE ...] [--json OUT.json]

For each method it times `fit()` on real augmented batches from trainer.data and on one real
batch repeated from memory (no input cost), alternating the two `--rounds` times and keeping
each one's fastest round (the machine may be shared: the fastest round is the least disturbed).
Input-pipeline overhead = time(real) / time(constant) - 1, in wall time and in CPU time of the
process (the steadier figure on a shared machine); also the time the pipeline needs per
batch on its own (an upper bound of what it can steal from training on a CPU-only box).
Batches are the preset's own (its augmentation; targets at the output side, inputs at the
input side), and `--set` changes the method's config as `swapstream train --set` does.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from swapstream.faces.files import write_json
from swapstream.trainer.tf_quiet import import_tensorflow

import_tensorflow()  # before the modules below import it

from swapstream.trainer.data import constant_dataset, load_face_pair, make_dataset  # noqa: E402
from swapstream.trainer.methods import (  # noqa: E402
    METHODS,
    build_method,
    get_preset,
    preset_config,
    shared_preset_names,
)
from swapstream.trainer.methods.configs import io_sizes  # noqa: E402
from swapstream.trainer.precision import resolve_precision  # noqa: E402
from swapstream.trainer.settings import apply_settings, parse_assignments  # noqa: E402


def _timed_fit(method, dataset, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for `steps` training steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    method.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return time.perf_counter() - wall, time.process_time() - cpu


def pipeline_seconds_per_batch(dataset, batches: int) -> float:
    """Time to produce one batch with nothing else running (the input cost on its own)."""
    it = iter(dataset)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def measure_method(name: str, path_a: str, path_b: str, preset: str, steps: int, rounds: int,
                   precision: str = "auto", settings: tuple[tuple[str, str], ...] = ()) -> dict:
    """Figures for one method (see module docstring)."""
    cfg = apply_settings(preset_config(name, preset), settings)
    cfg = dataclasses.replace(cfg, dtype_policy=resolve_precision(precision, cfg.dtype_policy))
    batch = get_preset(name, preset).train.batch_size
    input_size, output_size = io_sizes(cfg)
    pair = load_face_pair(path_a, path_b, output_size)
    method = build_method(name, cfg, template=pair.template)
    method.compile(method.default_optimizers(), jit_compile=cfg.jit_compile)
    real = make_dataset(pair.faces_a, pair.faces_b, batch, get_preset(name, preset).augment, seed=0,
                        input_size=input_size)
    const = constant_dataset(real)
    first = _timed_fit(method, real, 1)[0]  # tracing
    _timed_fit(method, const, 2)
    t_real, t_const = [], []
    for _ in range(rounds):
        t_real.append(_timed_fit(method, real, steps))
        t_const.append(_timed_fit(method, const, steps))
    real_s, const_s = min(t[0] for t in t_real) / steps, min(t[0] for t in t_const) / steps
    # CPU seconds are far less disturbed by other processes than wall time on a shared box.
    real_cpu, const_cpu = min(t[1] for t in t_real), min(t[1] for t in t_const)
    input_s = pipeline_seconds_per_batch(real, 4 * steps)
    counts = method.parameter_counts()
    return {"method": name, "preset": preset, "precision": cfg.dtype_policy, "size": cfg.size,
            "output_size": output_size, "settings": [f"{k}={v}" for k, v in settings], "batch": batch,
            "parameters_total": counts["total"], "parameters_inference": counts["inference"],
            "seconds_per_step": round(real_s, 4), "images_per_second": round(2 * batch / real_s, 1),
            "images_per_second_constant_input": round(2 * batch / const_s, 1),
            "input_overhead": round(real_s / const_s - 1, 3),
            "input_overhead_cpu_time": round(real_cpu / const_cpu - 1, 3),
            "input_ms_per_batch_alone": round(1000 * input_s, 1), "first_step_seconds": round(first, 1)}


def markdown(rows: list[dict]) -> str:
    """The figures as a Markdown table."""
    head = ("| method | precision | size | output | batch | parameters (total / exported) | images/s | s/step | "
            "images/s, constant input | input overhead (wall) | input overhead (CPU time) | "
            "input alone, ms/batch | first step (trace) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['method']}{''.join(' ' + s for s in r['settings'])} | {r['precision']} | {r['size']} | "
        f"{r['output_size']} | {r['batch']} | {r['parameters_total'] / 1e6:.2f}M / "
        f"{r['parameters_inference'] / 1e6:.2f}M | {r['images_per_second']} | {r['seconds_per_step']} | "
        f"{r['images_per_second_constant_input']} | {100 * r['input_overhead']:+.1f}% | "
        f"{100 * r['input_overhead_cpu_time']:+.1f}% | "
        f"{r['input_ms_per_batch_alone']} | {r['first_step_seconds']} s |\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m swapstream.trainer.measure", description=__doc__.split("\n")[0])
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--preset", default="cpu", help="a preset every method has: " + " | ".join(shared_preset_names()))
    p.add_argument("--methods", default="all", help="all, or some of " + ",".join(METHODS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precision", default="auto",
                   help="auto | float32 | mixed_bfloat16, or several separated by commas (each "
                        "method is measured in each, one after the other)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="change a field of the method's config (as `swapstream train --set`); repeatable")
    p.add_argument("--json")
    args = p.parse_args(argv)
    settings = parse_assignments(args.settings)
    names = list(METHODS) if args.methods == "all" else args.methods.split(",")
    rows = []
    for name in names:
        for precision in args.precision.split(","):
            rows.append(measure_method(name, args.a, args.b, args.preset, args.steps, args.rounds, precision,
                                       settings))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
