"""The provenance watermark (faces/watermark.py) and `swapstream verify` on marked and unmarked media."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from swapstream.clients import verify
from swapstream.faces import watermark as wm
from swapstream.faces.model_folder import manifest_sha256
from swapstream.faces.synth import pose_sequence, render_face

PAYLOAD = wm.model_id("ae-demo", "0" * 64)
FACE_BOX = (51, 60, 152, 152)  # the Haar box of render_face's face in a 256x256 frame


def _frames(n: int, seed: int = 3, size: int = 256) -> list[np.ndarray]:
    return [render_face(seed, pose, (size, size)) for pose in pose_sequence(n, seed=seed)]


def _jpeg(frame: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_provenance_modules_load_neither_tensorflow_nor_grpc():
    code = ("import json, sys\n"
            "import swapstream.faces.watermark, swapstream.clients.verify, swapstream.clients.credentials\n"
            "print(json.dumps([m for m in ('tensorflow', 'keras', 'grpc', 'onnx') if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_model_id_is_32_bits_and_depends_on_name_and_manifest():
    a = wm.model_id("m", "ab" * 32)
    assert 0 <= a < 2**32
    assert a == wm.model_id("m", "ab" * 32)
    assert a != wm.model_id("n", "ab" * 32)
    assert a != wm.model_id("m", "cd" * 32)


def test_embed_is_pure_and_local():
    frame = _frames(1)[0]
    before = frame.copy()
    marked = wm.embed(frame, FACE_BOX, PAYLOAD)
    assert np.array_equal(frame, before), "embed must not modify its input"
    x, y, w, h = FACE_BOX
    outside = np.ones(frame.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert np.array_equal(marked[outside], frame[outside]), "the mark stays inside the region"
    diff = marked[y:y + h, x:x + w].astype(float) - frame[y:y + h, x:x + w]
    psnr = 10 * np.log10(255**2 / (diff**2).mean())
    assert 38 < psnr < 50
    # The same delta on B, G and R: the chroma is left alone (up to clipping and rounding).
    assert np.abs(diff[..., 0] - diff[..., 2]).mean() < 0.5


def test_shifted_tiles_move_the_tile_by_sixteenths_of_a_pixel():
    tiles = wm.shifted_tiles(wm.PUBLIC_KEY, PAYLOAD)
    assert tiles.shape == (wm.SUBPIXEL, wm.SUBPIXEL, wm.TILE, wm.TILE) and not tiles.flags.writeable
    tile = tiles[0, 0]
    half = wm.SUBPIXEL // 2

    def half_pixel_more(t: np.ndarray, axis: int) -> np.ndarray:
        k = np.fft.fftfreq(wm.TILE)
        phase = np.exp(-1j * np.pi * (k[None, :] if axis == 1 else k[:, None]))
        return np.real(np.fft.ifft2(np.fft.fft2(t) * phase))

    # Half a pixel, and half a pixel more, is one whole pixel: along x for [qy, qx] = [0, 8], along y for [8, 0].
    assert np.allclose(half_pixel_more(tiles[0, half], 1), np.roll(tile, 1, axis=1), atol=1e-4)
    assert np.allclose(half_pixel_more(tiles[half, 0], 0), np.roll(tile, 1, axis=0), atol=1e-4)
    assert wm.shifted_tiles(wm.PUBLIC_KEY.encode(), PAYLOAD) is tiles  # made once per key and payload


@pytest.mark.parametrize("quality", [None, 75])
def test_detect_finds_the_payload_after_jpeg(quality):
    for frame in _frames(3):
        marked = wm.embed(frame, FACE_BOX, PAYLOAD)
        if quality:
            marked = _jpeg(marked, quality)
        found, payload, score = wm.detect(marked)
        assert found and payload == PAYLOAD, score
        assert score > wm.DEFAULT_THRESHOLD


def test_unmarked_and_wrong_key_are_not_found():
    for frame in _frames(3, seed=11):
        found, payload, score = wm.detect(frame)
        assert not found and payload is None and score < wm.DEFAULT_THRESHOLD
        marked = wm.embed(frame, FACE_BOX, PAYLOAD, key="operator-secret")
        assert not wm.detect(marked, key="someone-else")[0]
        assert wm.detect(marked, key="operator-secret")[1] == PAYLOAD


def test_detector_finds_any_anchor_and_a_mask_region():
    frame = cv2.resize(_frames(1)[0], (640, 360))
    mask = np.zeros(frame.shape[:2], np.float32)
    cv2.ellipse(mask, (400, 180), (90, 120), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 8)
    d = wm.analyze(wm.embed(frame, mask, PAYLOAD, anchor=(37, 13)))
    assert d.found and d.payload == PAYLOAD
    assert d.shift == (37 % wm.TILE, 13 % wm.TILE)
    bx, by, bw, bh = d.box
    assert bx <= 400 <= bx + bw and by <= 180 <= by + bh, "the best window covers the marked face"


def test_a_small_face_of_96_px_is_found_after_jpeg():
    # The detector's windows lie on a half-tile grid (96 px and up) and small faces get a
    # stronger mark (size_gain): a face of about 96 px is found and its payload read.
    hits = []
    for frame in _frames(3, seed=5, size=162):
        frame = cv2.copyMakeBorder(frame, 40, 54, 90, 68, cv2.BORDER_REFLECT)  # 320x256, face off-centre
        box = (90 + 32, 40 + 38, 96, 96)
        d = wm.analyze(_jpeg(wm.embed(frame, box, PAYLOAD), 75))
        assert not wm.analyze(_jpeg(frame, 75)).found
        hits.append(d)
    assert all(d.found for d in hits), [round(d.score, 1) for d in hits]
    # A face this small holds few copies of the tile: the bits are weak (one frame may lose a
    # few, `verify` adds the soft bits of all frames), but far from the 16 a random read gets.
    assert all(bin(d.payload ^ PAYLOAD).count("1") <= 6 for d in hits)
    assert wm.size_gain(96) == wm.MAX_SIZE_GAIN and wm.size_gain(300) == 1.0


def test_a_small_face_is_marked_over_a_square_of_min_mark_side():
    frame = cv2.copyMakeBorder(_frames(1, seed=5, size=162)[0], 40, 54, 90, 68, cv2.BORDER_REFLECT)
    box = (122, 78, 96, 96)
    grown = wm.mark_box(box)
    assert grown == (98, 54, 144, 144), "the square of MIN_MARK_SIDE about the face's centre"
    assert wm.mark_box((10, 20, 150, 150)) == (10, 20, 150, 150), "a large face is marked over its box"
    changed = np.any(wm.embed(frame, box, PAYLOAD) != frame, axis=2)
    ys, xs = np.nonzero(changed)
    gx, gy, gw, gh = grown
    assert xs.min() >= gx and xs.max() < gx + gw and ys.min() >= gy and ys.max() < gy + gh
    assert xs.min() < box[0] - 8 and ys.max() >= box[1] + box[3] + 8, "the ring around the face carries the mark"
    plain = np.any(wm.embed(frame, box, PAYLOAD, adaptive=False) != frame, axis=2)
    assert not plain[:box[1]].any(), "adaptive=False marks the box as given"


def _h264(frames: list[np.ndarray]) -> list[np.ndarray]:
    """An H.264 round trip at libx264's defaults (crf 23)."""
    av = pytest.importorskip("av")
    import io

    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23"}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="bgr24")))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as src:
        return [fr.to_ndarray(format="bgr24") for fr in src.decode(video=0)]


def test_a_moving_96_px_face_is_found_after_h264():
    # A 96 px face moving 3 px per frame over a blurred background, marked as a stream is.
    # Marked over its box alone (at up to 3x strength, before MIN_MARK_SIDE) it scored 7-10
    # here; over the 144 px square it clears the threshold by far.
    bg = cv2.GaussianBlur(cv2.resize(_frames(1, seed=9)[0], (320, 256)), (0, 0), 3)
    frames, boxes = [], []
    for i, face in enumerate(_frames(12, seed=5, size=162)):
        frame, x0, y0 = bg.copy(), 60 + 3 * i, 40 + 3 * i // 2
        frame[y0:y0 + 162, x0:x0 + 162] = face
        frames.append(frame)
        boxes.append((x0 + 32, y0 + 38, 96, 96))
    tracker = wm.AnchorTracker()
    marked = [wm.embed(f, b, PAYLOAD, anchor=tracker.update(f, b)) for f, b in zip(frames, boxes)]
    scores = [wm.analyze(f).score for f in _h264(marked)]
    assert min(scores) > 1.5 * wm.DEFAULT_THRESHOLD, " ".join(f"{s:.1f}" for s in scores)
    assert max(wm.analyze(f).score for f in _h264(frames)) < wm.DEFAULT_THRESHOLD


def test_flat_skin_is_marked_less_than_texture_but_still_marked():
    rng = np.random.default_rng(1)
    frame = np.full((256, 256, 3), 150, np.uint8)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (256, 128)).astype(np.float32), (0, 0), 1.2)
    frame[:, 128:] = np.clip(150 + texture, 0, 255).astype(np.uint8)[:, :, None]
    box = (0, 0, 256, 256)
    def rms(marked: np.ndarray, cols: slice) -> float:
        return float(np.sqrt(((marked[32:224, cols, 1].astype(float) - frame[32:224, cols, 1]) ** 2).mean()))

    adaptive, plain = wm.embed(frame, box, PAYLOAD), wm.embed(frame, box, PAYLOAD, adaptive=False)
    flat, textured = rms(adaptive, slice(32, 96)), rms(adaptive, slice(160, 224))
    assert flat < 0.75 * textured, (flat, textured)
    assert flat > 0.45 * textured, "flat skin still carries the mark (the floor)"
    assert abs(rms(plain, slice(32, 96)) - rms(plain, slice(160, 224))) < 0.15 * rms(plain, slice(32, 96))
    # On a smooth synthetic face (blurred, as a model's output is smoother than a render) the
    # flattest fifth of the face (local luma std) carries less than the plain mark.
    face = cv2.GaussianBlur(_frames(1)[0], (0, 0), 1.5)
    x, y, w, h = FACE_BOX
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.float32)
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (9, 9)) - cv2.blur(grey, (9, 9)) ** 2, 0))
    flat_skin = np.zeros(grey.shape, bool)
    flat_skin[y + h // 8:y + h - h // 8, x + w // 8:x + w - w // 8] = True  # inside the feathered edge
    flat_skin &= std < np.percentile(std[flat_skin], 20)

    def delta(marked: np.ndarray) -> float:
        return float(np.abs(marked[flat_skin].astype(float) - face[flat_skin]).mean())

    assert delta(wm.embed(face, FACE_BOX, PAYLOAD)) < 0.9 * delta(wm.embed(face, FACE_BOX, PAYLOAD, adaptive=False))
    assert wm.detect(_jpeg(wm.embed(face, FACE_BOX, PAYLOAD)))[1] == PAYLOAD


def test_embed_inplace_marks_the_callers_frame_only_inside_the_region():
    frame = _frames(1)[0]
    want = wm.embed(frame, FACE_BOX, PAYLOAD, anchor=(5.5, 3.0))
    mine = frame.copy()
    assert wm.embed_inplace(mine, FACE_BOX, PAYLOAD, anchor=(5.5, 3.0)) is mine
    assert np.array_equal(mine, want)
    view = mine[10:200, 20:230]  # a view into a bigger frame is marked through to it
    wm.embed_inplace(view, (40, 50, 150, 130), PAYLOAD)
    assert not np.array_equal(mine[60:180, 60:190], want[60:180, 60:190])
    assert np.array_equal(mine[:10], want[:10])


def test_h264_reencode_keeps_the_mark():
    # A 223 px face: a codec leaves less of the mark on a small, flat cartoon face than on a real one.
    box, tracker = (77, 91, 223, 223), wm.AnchorTracker()
    frames = [wm.embed(f, box, PAYLOAD, anchor=tracker.update(f, box)) for f in _frames(12, size=384)]
    decoded = _h264(frames)
    assert len(decoded) == len(frames)
    hits = [wm.analyze(f) for f in decoded]
    assert all(d.found for d in hits), " ".join(f"{d.score:.1f}" for d in hits)
    # One frame's 32 bits can lose one or two to crf 23 on these flat cartoon faces; over the
    # video the soft bits add up (what `verify` does).
    assert sum(d.payload == PAYLOAD for d in hits) >= len(hits) // 2
    total = np.sum([d.soft_bits for d in hits], axis=0)
    assert int(((total > 0).astype(np.int64) << np.arange(wm.N_BITS)).sum()) == PAYLOAD


def test_anchor_tracker_follows_the_face_and_restarts_on_a_cut():
    frame = cv2.resize(_frames(1)[0], (320, 320))
    box = (60, 60, 200, 200)
    tracker = wm.AnchorTracker()
    assert tracker.update(frame, box) == (60.0, 60.0), "a new track starts at its box"
    moved = cv2.warpAffine(frame, np.float32([[1, 0, 3.5], [0, 1, -2.0]]), (320, 320), borderMode=cv2.BORDER_REFLECT)
    ax, ay = tracker.update(moved, box)
    assert abs(ax - 63.5) < 0.5 and abs(ay - 58.0) < 0.5, (ax, ay)
    # The mark at a fractional anchor is still found, at that anchor's whole-pixel shift.
    d = wm.analyze(wm.embed(moved, box, PAYLOAD, anchor=(ax, ay)))
    assert d.found and d.payload == PAYLOAD
    def circular(a: float, b: float) -> float:
        return abs((a - b + wm.TILE / 2) % wm.TILE - wm.TILE / 2)

    assert circular(d.shift[0], ax) <= 1 and circular(d.shift[1], ay) <= 1, (d.shift, ax, ay)
    cut = np.random.default_rng(0).integers(0, 255, frame.shape, dtype=np.uint8)
    assert tracker.update(cut, box) == (60.0, 60.0), "a cut restarts the anchor"


def test_anchor_tracker_follows_a_jump_of_a_quarter_of_the_face():
    # The box lags the face (the server's tracker smooths it); a jump of 0.275 of the side is a
    # real motion that phase correlation still measures, so the anchor follows instead of
    # restarting at the box (a restart makes the codec code the whole mark afresh).
    frame = cv2.resize(_frames(1)[0], (400, 400))
    box, tracker = (100, 100, 200, 200), wm.AnchorTracker()
    tracker.update(frame, box)
    moved = cv2.warpAffine(frame, np.float32([[1, 0, 0], [0, 1, -55]]), (400, 400), borderMode=cv2.BORDER_REFLECT)
    ax, ay = tracker.update(moved, box)
    assert abs(ax - 100) < 0.5 and abs(ay - 45) < 0.5, (ax, ay)


def test_bad_arguments_raise_clear_errors():
    frame = _frames(1)[0]
    with pytest.raises(ValueError, match="payload"):
        wm.embed(frame, FACE_BOX, 2**32)
    with pytest.raises(ValueError, match="payload"):
        wm.embed(frame, FACE_BOX, -1)
    with pytest.raises(ValueError, match="key"):
        wm.embed(frame, FACE_BOX, 1, key="")
    with pytest.raises(ValueError, match="frame"):
        wm.detect(frame.astype(np.float32))
    with pytest.raises(ValueError, match="mask"):
        wm.embed(frame, np.ones((10, 10), bool), 1)
    with pytest.raises(ValueError, match="region"):
        wm.embed(frame, "face", 1)
    # A region outside the frame, and a tiny frame: nothing to mark, nothing found, no error.
    assert np.array_equal(wm.embed(frame, (900, 900, 50, 50), 1), frame)
    assert wm.detect(np.zeros((20, 20, 3), np.uint8)) == (False, None, 0.0)


# --- swapstream verify -----------------------------------------------------------------------

def _write_video(path, frames, fps=25):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()


def test_verify_image_reports_the_model(tmp_path, capsys):
    models = tmp_path / "models"
    (models / "ae-demo").mkdir(parents=True)
    (models / "ae-demo" / "manifest.json").write_text('{"method": "ae"}')
    payload = wm.model_id("ae-demo", manifest_sha256(models / "ae-demo"))
    image = tmp_path / "swap.jpg"
    cv2.imwrite(str(image), wm.embed(_frames(1)[0], FACE_BOX, payload), [cv2.IMWRITE_JPEG_QUALITY, 75])
    out = tmp_path / "report.json"
    assert verify.main([str(image), "--models", str(models), "--json", str(out)]) == 0
    assert "ae-demo" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["found"] is True and report["model"] == "ae-demo"
    assert report["frames"][0]["payload"] == f"{payload:08x}"


def test_verify_names_a_model_despite_a_flipped_bit():
    soft = np.where((PAYLOAD >> np.arange(wm.N_BITS)) & 1, 4.0, -4.0).astype(np.float32)
    soft[5] = -soft[5] * 0.1  # one weak bit came out wrong
    flipped = PAYLOAD ^ (1 << 5)
    models = {PAYLOAD: "ae-demo", wm.model_id("other", "1" * 64): "other"}
    assert verify.model_for(flipped, soft, models) == "ae-demo"
    assert verify.model_for(flipped ^ 0xFF00, soft, models) is None, "too many bits differ"
    assert verify.model_for(PAYLOAD, soft, {}) is None


def test_verify_video_and_unmarked_and_bad_input(tmp_path, capsys):
    frames = _frames(6)
    marked, plain = tmp_path / "marked.avi", tmp_path / "plain.avi"
    _write_video(marked, [wm.embed(f, FACE_BOX, PAYLOAD, key="k1") for f in frames])
    _write_video(plain, frames)
    key_file = tmp_path / "key.txt"
    key_file.write_text("k1\n")
    assert verify.main([str(marked), "--key-file", str(key_file)]) == 0
    assert f"{PAYLOAD:08x}" in capsys.readouterr().out
    assert verify.main([str(marked)]) == 1, "another key finds nothing"
    assert verify.main([str(plain), "--key", "k1"]) == 1
    capsys.readouterr()
    assert verify.main([str(tmp_path / "missing.mp4")]) == 2
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert verify.main([str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("verify: error:") for line in err)
