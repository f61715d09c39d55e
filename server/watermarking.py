"""The provenance watermark in every swapped face (faces/watermark.py), wired into the server's
post-blend hook (`SwapPipeline._mark_faces`).

    markers = watermark_markers(key)                  # SwapServer(..., markers=markers)

Each model marks its faces with its own 32-bit id, `watermark.model_id(folder name, sha256 of its
manifest.json)`, the id `swapstream verify --models DIR` names a model by. A stream gets a
`Watermarker.for_stream()` marker whose `AnchorTracker`s move the mark with each face, so an H.264
encode of the stream keeps it (docs/provenance.md); a single image (SwapImage) is marked at the
frame's own anchor.

The key: `serve --watermark-key-file FILE`, else $SWAPSTREAM_WATERMARK_KEY, else the public key
(`watermark.PUBLIC_KEY`), which `swapstream verify` also falls back to, so a stock `verify` reads a
stock server's marks. `serve --no-watermark` turns the mark off.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from swapstream.faces import watermark as wm
from swapstream.faces.detect import Box
from swapstream.server.registry import LoadedModel

KEY_ENV = wm.KEY_ENV


def model_payload(model: LoadedModel) -> int:
    """The 32-bit id a model's swaps carry: from its folder name and its manifest.json's sha256."""
    return wm.model_id(model.name, model.manifest_sha256)


def read_watermark_key(key_file: str | None) -> tuple[str, str]:
    """(key, where it came from): the first line of `key_file`, $SWAPSTREAM_WATERMARK_KEY, else
    the public key. InputError for an unreadable or empty key file."""
    return wm.resolve_key(key_file, file_flag="--watermark-key-file")


class Watermarker:
    """Marks the swapped faces of a frame with one model's payload (a FaceMarker: frame, boxes -> frame)."""

    def __init__(self, payload: int, key: str, strength: float = wm.DEFAULT_STRENGTH) -> None:
        self.payload = int(payload)
        self.key = key
        self.strength = float(strength)
        # Made now and kept: the mark's memory is there before the first stream, whatever the number of models.
        self.tiles = wm.shifted_tiles(key, self.payload)

    def __call__(self, frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """A single image: every face box marked at the frame's own anchor, in place (the
        pipeline hands the marker its own frame, blended and not yet encoded)."""
        for box in boxes:
            wm.embed_inplace(frame, box, self.payload, self.key, self.strength, tiles=self.tiles)
        return frame

    def for_stream(self) -> Callable[[np.ndarray, Sequence[Box]], np.ndarray]:
        """A marker for one stream's frames, in order: each face's mark follows the face."""
        trackers: list[wm.AnchorTracker] = []

        def mark(frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
            # Faces come largest first; a change in their number starts every anchor afresh.
            if len(trackers) != len(boxes):
                trackers[:] = [wm.AnchorTracker() for _ in boxes]
            for box, tracker in zip(boxes, trackers):
                anchor = tracker.update(frame, box)
                wm.embed_inplace(frame, box, self.payload, self.key, self.strength, anchor=anchor,
                                 tiles=self.tiles)
            return frame

        return mark


def watermark_markers(key: str, strength: float = wm.DEFAULT_STRENGTH) -> Callable[[LoadedModel], Watermarker]:
    """SwapServer's `markers`: each model's Watermarker, carrying that model's payload."""
    def markers(model: LoadedModel) -> Watermarker:
        return Watermarker(model_payload(model), key, strength)

    return markers
