"""`swapstream verify VIDEO|IMAGE`: is this a swap, and which model made it?

Reads the invisible watermark (faces/watermark.py) in every frame (or every Nth), names the
model when `--models DIR` holds it, and reads the file's C2PA Content Credential if it has one.
Exit codes: 0 the mark was found, 1 it was not, 2 bad input.

A video counts as marked when at least two sampled frames carry the mark with payloads that
agree (within MAX_BIT_DIFF bits): one frame's detector false-positive rate is small, but a long
video has many frames, and two false hits agreeing on 32 random bits do not happen. A single
image, or a video of one sampled frame, needs its one frame.
"""
from __future__ import annotations

import os
import sys

import cv2
import numpy as np

from swapstream.faces import watermark as wm
from swapstream.faces.cliutil import EXIT_ERROR, EXIT_OK, ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.files import write_json
from swapstream.faces.model_folder import manifest_sha256
from swapstream.faces.video import VideoReader

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
KEY_ENV = wm.KEY_ENV
MAX_BIT_DIFF = 3


def build_parser() -> ArgumentParser:
    """The `verify` options."""
    p = ArgumentParser(prog="swapstream verify", description=__doc__.split("\n\n")[0])
    p.add_argument("media", help="a video or an image")
    p.add_argument("--key", help=f"watermark key (default: ${KEY_ENV}, else the public key)")
    p.add_argument("--key-file", help="read the watermark key from this file (keeps it out of the process list)")
    p.add_argument("--models", help="a models folder: name the model a payload belongs to")
    p.add_argument("--trust", help="PEM file of trusted CA certificates for the C2PA credential")
    p.add_argument("--every", type=int, default=1, help="check every Nth frame of a video (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many checked frames")
    p.add_argument("--threshold", type=float, default=wm.DEFAULT_THRESHOLD,
                   help=f"detection score threshold (default {wm.DEFAULT_THRESHOLD})")
    p.add_argument("--json", help="write the full report (every frame) here")
    p.add_argument("--quiet", action="store_true", help="print only the summary, not every frame")
    return p


def resolve_key(key: str | None, key_file: str | None) -> tuple[str, str]:
    """(key, where it came from): --key-file, --key, $SWAPSTREAM_WATERMARK_KEY, else the public key."""
    if key and key_file:
        raise InputError("give --key or --key-file, not both")
    return wm.resolve_key(key_file or None, key)


def known_models(models_dir: str) -> dict[int, str]:
    """payload -> model name for every folder with a manifest.json under `models_dir`."""
    if not os.path.isdir(models_dir):
        raise InputError(f"models folder {models_dir} does not exist")
    ids: dict[int, str] = {}
    for name in sorted(os.listdir(models_dir)):
        folder = os.path.join(models_dir, name)
        if os.path.isfile(os.path.join(folder, "manifest.json")):
            ids[wm.model_id(name, manifest_sha256(folder))] = name
    return ids


def _frames(path: str, every: int, max_frames: int | None):
    """Yield (index, BGR frame) of an image (index 0) or of every `every`-th video frame."""
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist")
    if os.path.splitext(path)[1].lower() in IMAGE_EXTS:
        data = np.fromfile(path, np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise InputError(f"{path} is not a readable image")
        yield 0, image
        return
    checked = 0
    with VideoReader(path) as video:
        for i, frame in enumerate(video):
            if i % every:
                continue
            yield i, frame
            checked += 1
            if max_frames is not None and checked >= max_frames:
                return


def _hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def model_for(payload: int | None, soft_bits: np.ndarray, models: dict[int, str]) -> str | None:
    """The known model whose id best explains the soft bits, if it differs from `payload` in at
    most MAX_BIT_DIFF bits: a maximum-likelihood decoder over the candidates, which puts right
    the odd bit a codec flipped."""
    if payload is None or not models:
        return None
    if payload in models:
        return models[payload]
    ids = np.array(list(models), dtype=np.int64)
    signs = ((ids[:, None] >> np.arange(wm.N_BITS)) & 1) * 2 - 1
    best = int(np.argmax(signs @ soft_bits))
    return models[int(ids[best])] if _hamming(int(ids[best]), payload) <= MAX_BIT_DIFF else None


def _combined_payload(hits: list[wm.Detection]) -> tuple[int | None, int, np.ndarray]:
    """The payload the found frames agree on (sign of their summed soft bits), how many agree, and
    the summed soft bits."""
    if not hits:
        return None, 0, np.zeros(wm.N_BITS)
    total = np.sum([h.soft_bits for h in hits], axis=0)
    payload = int(((total > 0).astype(np.int64) << np.arange(wm.N_BITS)).sum())
    return payload, sum(_hamming(h.payload, payload) <= MAX_BIT_DIFF for h in hits), total


def verify(path: str, key: str, models: dict[int, str] | None = None, every: int = 1,
           max_frames: int | None = None, threshold: float = wm.DEFAULT_THRESHOLD,
           trust_pem: str | None = None, on_frame=None) -> dict:
    """Check every sampled frame of `path` for the mark of `key`; return the report as a dict."""
    models = models or {}
    frames, hits = [], []
    for index, frame in _frames(path, every, max_frames):
        d = wm.analyze(frame, key, threshold)
        row = {"index": index, "found": d.found, "score": round(d.score, 2),
               "payload": None if d.payload is None else f"{d.payload:08x}",
               "model": model_for(d.payload, d.soft_bits, models) if d.found else None,
               "box": list(d.box) if d.found and d.box else None}
        frames.append(row)
        if d.found:
            hits.append(d)
        if on_frame is not None:
            on_frame(row)
    payload, agreeing, total = _combined_payload(hits)
    found = agreeing >= (1 if len(frames) == 1 else 2)
    report = {
        "file": path, "frames_checked": len(frames), "frames_marked": len(hits),
        "found": found, "payload": f"{payload:08x}" if found else None,
        "model": model_for(payload, total, models) if found else None,
        "frames_agreeing": agreeing, "threshold": threshold, "frames": frames,
    }
    report["credential"] = _credential(path, trust_pem)
    return report


def _credential(path: str, trust_pem: str | None) -> dict | None:
    """The C2PA credential's summary, or a note why it was not read (None: the file has none)."""
    try:
        from swapstream.clients import credentials
    except ImportError as exc:  # c2pa-python is an optional extra
        return {"state": "not checked", "reason": f"{exc.name or 'c2pa'} is not installed"}
    return credentials.read_credential(path, trust_pem)


def _print_frame(row: dict) -> None:
    if row["found"]:
        name = f" ({row['model']})" if row["model"] else ""
        print(f"frame {row['index']}: mark found, payload {row['payload']}{name}, score {row['score']:.1f}")
    else:
        print(f"frame {row['index']}: no mark (score {row['score']:.1f})")


def _print_summary(report: dict) -> None:
    if report["found"]:
        name = f", model {report['model']}" if report["model"] else ""
        print(f"{report['file']}: SWAPPED - the mark is in {report['frames_marked']} of "
              f"{report['frames_checked']} frames, payload {report['payload']}{name}")
    else:
        print(f"{report['file']}: no watermark found in {report['frames_checked']} frames "
              f"({report['frames_marked']} frames scored over the threshold)")
    cred = report["credential"]
    if cred is None:
        print("content credential: none")
    elif "reason" in cred:
        print(f"content credential: {cred['state']} ({cred['reason']})")
    else:
        what = ", ".join(f"{k} {cred[k]}" for k in ("model", "manifest_sha256", "digital_source_type") if cred.get(k))
        print(f"content credential: {cred['state']}, signed by {cred.get('signer') or 'unknown'}; {what}")
        if report["found"] and cred.get("watermark_payload") == report["payload"]:
            print("  the credential names the model whose mark the frames carry")
        for err in cred.get("errors", [])[:5]:
            print(f"  credential failure: {err}")


def main(argv: list[str] | None = None) -> int:
    """`swapstream verify`: 0 the mark was found, 1 it was not, 2 bad input."""
    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.every < 1:
            raise InputError("--every must be >= 1")
        if args.max_frames is not None and args.max_frames < 1:
            raise InputError("--max-frames must be >= 1")
        key, _ = resolve_key(args.key, args.key_file)
        models = known_models(args.models) if args.models else {}
        trust = None
        if args.trust:
            try:
                with open(args.trust, encoding="ascii") as fh:
                    trust = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the trust anchors {args.trust}: {exc}") from None
        report = verify(args.media, key, models, args.every, args.max_frames, args.threshold, trust,
                        on_frame=None if args.quiet else _print_frame)
        _print_summary(report)
        if args.json:
            write_json(args.json, report)
        return EXIT_OK if report["found"] else EXIT_ERROR
    return run_cli(body, "verify")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
