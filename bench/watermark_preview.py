"""Preview images of the provenance watermark: original, marked, and the difference amplified.

    .venv/bin/python bench/watermark_preview.py [--data DIR] [--out docs/previews]

watermark.png: person2's first frame (a face of about 290 px); watermark-small.png: the full-body
clip more/s13.mp4 (a face of about 97 px, marked with size_gain's extra strength over the 144 px
square about it, `watermark.mark_box`), shown 3x. Each: original | marked | difference x12 around
mid-grey, the marked square with a margin.
"""
from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from watermark_bench import PAYLOAD, face_boxes, read_frames  # noqa: E402

from swapstream.faces import watermark as wm  # noqa: E402


def panel(path: str, frame_index: int, zoom: int) -> np.ndarray:
    """original | marked | difference x12 of one frame's face (marked square plus a margin), scaled by `zoom`."""
    frames, _ = read_frames(path, frame_index + 1)
    box = face_boxes(frames)[frame_index]
    if box is None:
        raise SystemExit(f"no face in frame {frame_index} of {path}")
    frame = frames[frame_index]
    marked = wm.embed(frame, box, PAYLOAD)
    x, y, w, h = wm.mark_box(box)  # a small face is marked over a larger square: show all of it
    m = box[2] // 8
    y0, y1, x0, x1 = max(y - m, 0), min(y + h + m, frame.shape[0]), max(x - m, 0), min(x + w + m, frame.shape[1])
    diff = np.clip(128 + 12 * (marked.astype(np.float32) - frame), 0, 255).astype(np.uint8)
    tiles = [im[y0:y1, x0:x1] for im in (frame, marked, diff)]
    out = np.hstack(tiles)
    return cv2.resize(out, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) if zoom > 1 else out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "real"))
    p.add_argument("--out", default=os.path.join(here, "..", "docs", "previews"))
    args = p.parse_args()
    for name, clip, index, zoom in (("watermark.png", "person2.mp4", 0, 1),
                                    ("watermark-small.png", os.path.join("more", "s13.mp4"), 10, 3)):
        path = os.path.join(args.data, clip)
        if not os.path.isfile(path):
            raise SystemExit(f"no clip {path}")
        cv2.imwrite(os.path.join(args.out, name), panel(path, index, zoom))
        print(os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
