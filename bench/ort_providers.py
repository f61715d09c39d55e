"""onnxruntime execution providers compared on exported model folders: CUDA vs CPU per batch size.

For every model folder under MODELS (manifest.json + model.onnx, as `swapstream export` writes
them) it opens one session per device through server.session.make_session (the server's own
provider selection, so a CUDA session that silently fell back to CPU is reported as CPU), then
times one call per batch size, round-robin across devices so background load hits all alike.
Input is float32 noise: the time of these networks does not depend on the pixel values.

    python bench/ort_providers.py MODELS [--devices cpu,cuda] [--batches 1,8,32,64]
                                  [--repeats 20] [--json OUT.json] [--markdown OUT.md]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from swapstream.faces.files import write_text


def time_folder(folder: str, devices: list[str], batches: list[int], repeats: int) -> list[dict]:
    """Rows (model, precision, device, provider, batch, ms per call, ms per face, faces/s)."""
    import numpy as np

    from swapstream.faces.model_folder import load_manifest
    from swapstream.server.session import make_session

    manifest = load_manifest(folder)
    onnx_path = os.path.join(folder, "model.onnx")
    sessions = {}
    for device in devices:
        try:
            sessions[device] = make_session(onnx_path, device)
        except Exception as exc:  # noqa: BLE001 - a missing provider is a result, not a crash
            print(f"{os.path.basename(folder)}: {device}: {exc}", file=sys.stderr)
    size = manifest.crop_size
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.random((batch, size, size, 3), dtype=np.float32)
        for session, _ in sessions.values():  # warm-up: arenas, cuDNN algorithm search
            session.run(None, {manifest.input_name: x})
        times: dict[str, list[float]] = {d: [] for d in sessions}
        for _ in range(repeats):
            for device, (session, _) in sessions.items():
                t = time.perf_counter()
                session.run(None, {manifest.input_name: x})
                times[device].append((time.perf_counter() - t) * 1000)
        for device, (_, provider) in sessions.items():
            ms = float(np.median(times[device]))
            rows.append({"model": os.path.basename(folder), "precision": manifest.precision,
                         "size": size, "device": device, "provider": provider, "batch": batch,
                         "ms_per_call": round(ms, 3), "ms_per_face": round(ms / batch, 3),
                         "faces_per_second": round(1000 * batch / ms, 1)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    out = ["| model | precision | size | provider | batch | ms per call | ms per face | faces/s |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['model']} | {r['precision']} | {r['size']} | {r['provider'].replace('ExecutionProvider', '')} "
            f"| {r['batch']} | {r['ms_per_call']:.2f} | {r['ms_per_face']:.3f} | {r['faces_per_second']:.0f} |"
            for r in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", help="folder of model folders")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args(argv)
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__} ({ort.get_device()}), providers {ort.get_available_providers()}")
    rows = []
    for name in sorted(os.listdir(args.models)):
        folder = os.path.join(args.models, name)
        if os.path.isfile(os.path.join(folder, "manifest.json")):
            rows += time_folder(folder, args.devices.split(","), [int(b) for b in args.batches.split(",")],
                                args.repeats)
    table = markdown(rows)
    print(table)
    if args.json:
        write_text(args.json, json.dumps(rows, indent=2))
    if args.markdown:
        write_text(args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
