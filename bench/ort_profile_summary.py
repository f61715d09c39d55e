"""Summarise onnxruntime profile files: per file, the C++ `model_run` times (p50, p90, max),
the share of them spent in nodes, and node time by provider and operator.

    python bench/ort_profile_summary.py DIR    (the DIR of bench/bench_variants.py ORT_PROFILE=DIR)
"""
from __future__ import annotations

import glob
import json
import sys
from collections import defaultdict

import numpy as np


def summarise(path: str, top: int = 8) -> str:
    """A few lines on one profile JSON (empty when it holds no model run)."""
    with open(path, encoding="utf-8") as fh:
        events = json.load(fh)
    runs = np.array([e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]) / 1000.0
    if not len(runs):
        return ""
    by_op: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            args = e.get("args", {})
            by_op[(args.get("provider", "?"), args.get("op_name", "?"))] += e["dur"] / 1000.0
    nodes = sum(by_op.values())
    lines = [f"{path}: {len(runs)} runs, model_run ms p50 {np.percentile(runs, 50):.2f} p90 "
             f"{np.percentile(runs, 90):.2f} max {runs.max():.2f}; in nodes {100 * nodes / runs.sum():.0f}%"]
    for (provider, op), ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"   {provider:<26} {op:<22} {ms:9.1f} ms  {ms / len(runs):7.3f} ms/run")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for path in sorted(glob.glob(f"{sys.argv[1]}/*.json")):
        text = summarise(path)
        if text:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
