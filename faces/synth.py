"""Deterministic synthetic human-like faces with ground truth (OpenCV drawing + numpy only).

Two parameter sets drive a render:

* `Identity` (who): face shape, skin tone, eyes, brows, nose, mouth, hair, clothing. It is
  derived deterministically from any integer with `identity_from_seed(seed)`.
* `Pose` (what the face does and where it is): expression (mouth open, smile, blink, brow
  raise, gaze), head pose (yaw, pitch, roll), placement (scale, tx, ty), lighting and
  background. `POSE_FIELDS` fixes the order of its float fields so a pose travels as a flat
  float vector (`pose_to_vector` / `pose_from_vector`), e.g. inside a face set.

The head's centre and size come from the pose only, so `render_face(B, pose_of_A_frame)` is
the ground truth of a perfect swap: identity B wearing A's exact expression, pose, light and
background. `pose_sequence(n, seed)` makes a smooth talking-head motion.

The face is drawn on a simple head model: feature points are laid out on a frontal face plane,
lifted onto a flattened ellipsoid, rotated in 3D and projected orthographically. Skin gets
Lambertian shading from that ellipsoid plus blurred light/dark bands (darker eye sockets,
lighter nose bridge and cheekbones, shadows under nose and lip). Those bands are what the
Haar cascade's features look for; flat cartoon faces are found far less often.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import cv2
import numpy as np

RENDERER_VERSION = "synth-1"
_SHIFT = 4  # sub-pixel bits for cv2 drawing (coordinates are multiplied by 2**_SHIFT)
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
# Shading strengths (tuned against the Haar cascade, see docs/synth.md).
_AMBIENT = 0.6
_SOCKET = -0.40
_BRIDGE = 0.22
_SCLERA_MAX = 0.8   # eye whites at most this times (skin brightness + 90), so dark faces keep dark sockets

# Realistic human skin tones, light to deep (RGB, converted to BGR below).
_SKIN_RGB = (
    (250, 222, 200), (238, 198, 166), (224, 176, 138), (203, 148, 108),
    (176, 120, 84), (142, 94, 62), (108, 70, 46), (80, 52, 36),
)
_HAIR_RGB = (
    (22, 19, 18), (52, 36, 28), (92, 62, 42), (140, 104, 72), (210, 178, 122),
    (128, 56, 30), (182, 92, 48), (150, 148, 146), (222, 212, 188),
)
_IRIS_RGB = ((92, 58, 34), (48, 30, 20), (128, 98, 52), (82, 118, 72), (78, 122, 172), (118, 128, 138))
HAIR_STYLES = ("short", "long", "buzz", "volume", "bob", "bald")
_HAIR_STYLE_WEIGHTS = (0.26, 0.22, 0.12, 0.16, 0.18, 0.06)


def _bgr(rgb) -> tuple[float, float, float]:
    return (float(rgb[2]), float(rgb[1]), float(rgb[0]))


def _rng(seed: int, salt: int) -> np.random.Generator:
    """A generator for any Python integer (negative and huge included), separate per purpose."""
    seed = int(seed)
    return np.random.default_rng(np.random.SeedSequence([abs(seed), int(seed < 0), salt]))


# ----------------------------------------------------------------------------------------------
# Identity


@dataclass(frozen=True)
class Identity:
    """Who is drawn. Lengths are in head units: the head spans y = -1 (crown) .. +1 (chin)."""

    seed: int
    face_width: float        # half-width of the face oval (0.66 .. 0.80)
    face_height: float       # half-height of the face oval (0.94 .. 1.02)
    jaw: float               # 0 round .. 1 square
    chin: float              # 0 broad .. 1 pointed chin
    skin: tuple[float, float, float]   # BGR 0..255
    eye_spacing: float       # eye centre distance from the midline
    eye_y: float             # eye line height (negative is up)
    eye_width: float         # eye half-width
    eye_open: float          # eye opening, fraction of the eye half-width
    eye_tilt: float          # outer corner up (+) or down (-)
    iris: tuple[float, float, float]
    brow_thickness: float
    brow_arch: float
    brow_colour: tuple[float, float, float]
    nose_length: float       # eye line to nose tip
    nose_width: float        # half-width of the nose wings
    mouth_width: float       # half-width of the mouth
    upper_lip: float         # upper lip thickness
    lower_lip: float         # lower lip thickness
    lip_colour: tuple[float, float, float]
    hair_colour: tuple[float, float, float]
    hair_style: str
    hairline: float          # forehead hairline height (negative is up)
    hair_part: float         # -1 .. 1: where the fringe is swept
    shirt: tuple[float, float, float]


def identity_from_seed(seed: int) -> Identity:
    """The identity of an integer: the same integer always gives the same person.

    Skin tone and hair colour come from separate discrete palettes (picked with a stride that
    spreads consecutive seeds apart) plus small jitter, so two identities differ clearly in
    tone, hair and shape rather than by invisible amounts.
    """
    rng = _rng(seed, salt=0x1D)
    seed = int(seed)
    skin_k = (seed * 3 + int(rng.integers(0, 2))) % len(_SKIN_RGB)
    skin = np.array(_bgr(_SKIN_RGB[skin_k])) * rng.uniform(0.95, 1.05)
    skin = skin + rng.uniform(-6, 6, 3)  # small hue jitter
    skin = np.clip(skin, 20, 250)
    hair_k = int(rng.integers(0, len(_HAIR_RGB)))
    if skin_k >= 3 and hair_k in (3, 4, 6, 7, 8):
        # Light hair over a darker face is rare in life and confuses the Haar cascade (a bright
        # band above a dark one): keep light hair for light skin.
        hair_k = int(rng.choice([0, 1, 2, 5]))
    hair = np.clip(np.array(_bgr(_HAIR_RGB[hair_k])) * rng.uniform(0.9, 1.1), 8, 245)
    style = str(rng.choice(HAIR_STYLES, p=np.array(_HAIR_STYLE_WEIGHTS)))
    iris_k = int(rng.integers(0, len(_IRIS_RGB)))
    if skin_k >= 4:
        iris_k = int(rng.choice([0, 1, 2]))
    iris = np.array(_bgr(_IRIS_RGB[iris_k])) * rng.uniform(0.85, 1.15)
    # Brows: darker than light hair, close to dark hair.
    brow = hair * 0.75 if hair.mean() < 110 else hair * 0.45 + np.array(_bgr((60, 42, 30))) * 0.3
    brow = np.minimum(brow, skin * 0.55)
    lip_rgb = np.array([skin[2] * 0.86, skin[1] * 0.58, skin[0] * 0.64])
    lip_rgb = lip_rgb * rng.uniform(0.85, 1.05) + np.array([rng.uniform(0, 25), 0, rng.uniform(0, 12)])
    lip = _bgr(np.clip(lip_rgb, 15, 240))
    shirt_hsv = np.uint8([[[rng.integers(0, 180), rng.integers(40, 200), rng.integers(50, 220)]]])
    shirt = cv2.cvtColor(shirt_hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(float)

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    eye_width = u(0.12, 0.15)
    return Identity(
        seed=seed,
        face_width=u(0.66, 0.80), face_height=u(0.94, 1.02), jaw=u(0.0, 1.0), chin=u(0.0, 1.0),
        skin=tuple(float(c) for c in skin),
        eye_spacing=u(0.26, 0.32), eye_y=u(-0.06, 0.02), eye_width=eye_width,
        eye_open=u(0.36, 0.52), eye_tilt=u(-0.12, 0.18), iris=tuple(float(c) for c in iris),
        brow_thickness=u(0.022, 0.05), brow_arch=u(0.0, 1.0), brow_colour=tuple(float(c) for c in brow),
        nose_length=u(0.27, 0.36), nose_width=u(0.075, 0.115),
        mouth_width=u(0.16, 0.23), upper_lip=u(0.022, 0.042), lower_lip=u(0.032, 0.058),
        lip_colour=lip,
        hair_colour=tuple(float(c) for c in hair), hair_style=style,
        hairline=u(-0.76, -0.6), hair_part=u(-1.0, 1.0),
        shirt=tuple(float(c) for c in shirt),
    )


# ----------------------------------------------------------------------------------------------
# Pose


@dataclass(frozen=True)
class Pose:
    """Expression, head pose, placement, light and background of one frame (all floats)."""

    mouth_open: float = 0.0      # 0 closed .. 1 wide open (the jaw drops with it)
    smile: float = 0.0           # 0 neutral .. 1 broad smile
    blink: float = 0.0           # 0 open .. 1 closed
    brow_raise: float = 0.0      # -1 frown .. 1 raised
    gaze_x: float = 0.0          # -1 .. 1 (iris position)
    gaze_y: float = 0.0          # -1 .. 1
    yaw: float = 0.0             # degrees, + turns the face towards image right
    pitch: float = 0.0           # degrees, + tilts the chin up
    roll: float = 0.0            # degrees, in-plane rotation
    scale: float = 0.6           # head height (crown to chin) / min(frame width, height)
    tx: float = 0.0              # head centre offset from the frame centre, fraction of the width
    ty: float = 0.0              # ... fraction of the height
    light_dir: float = 0.0       # degrees; 0 light from above, + from image right
    light_strength: float = 0.5  # 0 flat frontal light .. 1 strongly directional
    bg_hue: float = 100.0        # OpenCV hue 0..180
    bg_sat: float = 0.3          # 0..1
    bg_value: float = 0.6        # 0..1


POSE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Pose))


def pose_to_vector(pose: Pose) -> np.ndarray:
    """The pose as float64 values in `POSE_FIELDS` order."""
    return np.asarray(astuple(pose), dtype=np.float64)


def pose_from_vector(vector, names=None) -> Pose:
    """Rebuild a Pose from a flat vector (in `POSE_FIELDS` order, or in the order of `names`).

    With `names` (as stored beside the vectors, e.g. a face set's `pose_names`), fields are
    matched by name, so vectors written by an older field order still load; unknown names
    raise ValueError and fields missing from `names` keep their defaults.
    """
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    names = POSE_FIELDS if names is None else tuple(str(n) for n in names)
    if len(values) != len(names):
        raise ValueError(f"pose vector has {len(values)} values for {len(names)} names")
    unknown = [n for n in names if n not in POSE_FIELDS]
    if unknown:
        raise ValueError(f"unknown pose field(s) {', '.join(unknown)}; valid: {', '.join(POSE_FIELDS)}")
    return Pose(**{n: float(v) for n, v in zip(names, values)})


def poses_to_array(poses) -> np.ndarray:
    """A list of poses as a float64 (N, len(POSE_FIELDS)) array."""
    return np.stack([pose_to_vector(p) for p in poses]) if len(poses) else np.zeros((0, len(POSE_FIELDS)))


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, amp: float, fmin: float, fmax: float,
                  k: int = 3) -> np.ndarray:
    """A smooth random signal: a sum of k sinusoids (random frequency and phase), peak <= amp."""
    freqs = rng.uniform(fmin, fmax, k)
    phases = rng.uniform(0, 2 * np.pi, k)
    weights = rng.uniform(0.5, 1.0, k)
    weights = weights / weights.sum()
    return amp * (weights[None, :] * np.sin(2 * np.pi * freqs[None, :] * t[:, None] + phases[None, :])).sum(1)


def _events(rng: np.random.Generator, t_end: float, mean_gap: float, min_gap: float) -> list[float]:
    times, t = [], rng.uniform(0.2, mean_gap)
    while t < t_end + 1.0:
        times.append(t)
        t += min_gap + rng.exponential(mean_gap - min_gap)
    return times


def pose_sequence(n_frames: int, seed: int = 0, fps: float = 25.0) -> list[Pose]:
    """A talking head: speech-like mouth motion, blinks, eyes held closed now and then, small
    smooth head motion.

    Deterministic per seed, and a prefix of a longer sequence equals the shorter sequence
    (frame i does not depend on n_frames). Angles stay moderate (|yaw| <= 18, |pitch| <= 10,
    |roll| <= 10 degrees) because the Haar cascade is a frontal-face detector.
    """
    if n_frames < 0:
        raise ValueError("n_frames must be >= 0")
    if fps <= 0:
        raise ValueError("fps must be > 0")
    streams = np.random.SeedSequence([abs(int(seed)), int(int(seed) < 0), 0x40710]).spawn(5)
    # Child i of a SeedSequence does not depend on how many are spawned: adding a stream leaves
    # the earlier ones (and so the scene, speech and blinks of a seed) as they were.
    base, speech_rng, blink_rng, mouth_rng, closure_rng = (np.random.default_rng(s) for s in streams)
    t = np.arange(n_frames, dtype=np.float64) / fps
    t_end = float(t[-1]) if n_frames else 0.0

    # Scene constants of this take (light, background, framing), drawn first and in fixed order.
    light_dir = base.uniform(-70, 70)
    light_strength = base.uniform(0.2, 0.9)
    bg_hue, bg_sat, bg_value = base.uniform(0, 180), base.uniform(0.1, 0.6), base.uniform(0.3, 0.9)
    scale0 = base.uniform(0.56, 0.66)
    tx0, ty0 = base.uniform(-0.05, 0.05), base.uniform(-0.03, 0.04)
    yaw0, pitch0, roll0 = base.uniform(-5, 5), base.uniform(-3, 3), base.uniform(-3, 3)
    mouth_amp = base.uniform(0.55, 1.0)
    syllable_hz = base.uniform(3.0, 4.5)

    yaw = np.clip(yaw0 + _smooth_noise(base, t, 11.0, 0.04, 0.35), -18, 18)
    pitch = np.clip(pitch0 + _smooth_noise(base, t, 6.0, 0.05, 0.4), -10, 10)
    roll = np.clip(roll0 + _smooth_noise(base, t, 5.0, 0.04, 0.3), -10, 10)
    scale = scale0 + _smooth_noise(base, t, 0.03, 0.02, 0.15)
    tx = tx0 + _smooth_noise(base, t, 0.035, 0.02, 0.2)
    ty = ty0 + _smooth_noise(base, t, 0.025, 0.02, 0.2)
    smile = np.clip(0.25 + _smooth_noise(base, t, 0.55, 0.02, 0.15), 0, 1)
    brow = np.clip(_smooth_noise(base, t, 0.5, 0.05, 0.5), -0.6, 1)
    gaze_x = _smooth_noise(base, t, 0.6, 0.05, 0.5)
    gaze_y = _smooth_noise(base, t, 0.35, 0.05, 0.5)
    light = light_dir + _smooth_noise(base, t, 6.0, 0.01, 0.05)
    hue = (bg_hue + _smooth_noise(base, t, 4.0, 0.01, 0.05)) % 180

    # Speech: talk segments (1-4 s) and pauses (0.3-1.5 s); syllables open and close the mouth.
    envelope = np.zeros(n_frames)
    start, talking = 0.0, bool(speech_rng.random() < 0.8)
    while start <= t_end:
        length = speech_rng.uniform(1.0, 4.0) if talking else speech_rng.uniform(0.3, 1.5)
        if talking:
            envelope[(t >= start) & (t < start + length)] = 1.0
        start, talking = start + length, not talking
    if n_frames:
        k = max(1, int(round(0.08 * fps)))  # soften segment edges over ~80 ms
        envelope = np.convolve(np.pad(envelope, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid")
    jitter = _smooth_noise(mouth_rng, t, 1.2, 0.3, 1.2)  # syllable rate wanders
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * syllable_hz * t + jitter)
    mouth_open = np.clip(envelope * mouth_amp * (0.12 + 0.88 * syllables ** 1.4), 0, 1)

    blink = np.zeros(n_frames)
    for tb in _events(blink_rng, t_end, mean_gap=3.2, min_gap=1.2):
        blink = np.maximum(blink, np.exp(-(((t - tb) / 0.07) ** 2)))
    # Eyes held closed for a moment (0.2-0.6 s) every four seconds or so. Plain blinks close
    # the eyes in too few frames for a network to learn them within minutes; a take made for
    # training asks its subject to close the eyes now and then.
    ramp = 0.08
    for tc in _events(closure_rng, t_end, mean_gap=4.0, min_gap=2.0):
        hold = closure_rng.uniform(0.2, 0.6)
        closed = np.clip(np.minimum(t - (tc - ramp), (tc + hold + ramp) - t) / ramp, 0, 1)
        blink = np.maximum(blink, closed)
    blink = np.clip(blink * 1.05, 0, 1)

    columns = dict(mouth_open=mouth_open, smile=smile, blink=blink, brow_raise=brow, gaze_x=gaze_x,
                   gaze_y=gaze_y, yaw=yaw, pitch=pitch, roll=roll, scale=scale, tx=tx, ty=ty,
                   light_dir=light, light_strength=np.full(n_frames, light_strength), bg_hue=hue,
                   bg_sat=np.full(n_frames, bg_sat), bg_value=np.full(n_frames, bg_value))
    return [Pose(**{name: float(columns[name][i]) for name in POSE_FIELDS}) for i in range(n_frames)]


# ----------------------------------------------------------------------------------------------
# Rendering


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-view rotation (x right, y down, z towards the viewer)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


class _Head:
    """Maps head units to pixels for one identity and pose."""

    DEPTH = 0.85  # front-to-centre depth of the head ellipsoid

    def __init__(self, ident: Identity, pose: Pose, width: int, height: int) -> None:
        self.a, self.b = ident.face_width, ident.face_height
        self.s = pose.scale * min(width, height) / 2.0   # pixels per head unit
        self.cx = width / 2.0 + pose.tx * width
        self.cy = height / 2.0 + pose.ty * height
        self.rot = _rotation(pose.yaw, pose.pitch, pose.roll)
        yaw, pitch, roll = np.radians([pose.yaw, pose.pitch, pose.roll])
        self.cos_yaw, self.cos_pitch = float(np.cos(yaw)), float(np.cos(pitch))
        self.roll_deg = float(pose.roll)
        self.cr, self.sr = float(np.cos(roll)), float(np.sin(roll))
        # Silhouette of the rotated ellipsoid: half-widths sqrt(a^2 cos^2 + c^2 sin^2).
        c = self.DEPTH
        self.kx = float(np.sqrt(np.cos(yaw) ** 2 + (c / self.a) ** 2 * np.sin(yaw) ** 2))
        self.ky = float(np.sqrt(np.cos(pitch) ** 2 + (c / self.b) ** 2 * np.sin(pitch) ** 2))

    def surface_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Depth of the (flattened) face surface at frontal position x, y."""
        r = 1.0 - (x / self.a) ** 2 - (y / (self.b * 1.05)) ** 2
        return self.DEPTH * np.clip(r, 0.0, 1.0) ** 0.35

    def project(self, pts: np.ndarray, dz: float | np.ndarray = 0.0) -> np.ndarray:
        """Frontal face points (N, 2) lifted onto the face surface (+dz), rotated, to pixels."""
        x, y = pts[:, 0], pts[:, 1]
        q = np.stack([x, y, self.surface_z(x, y) + dz], 1) @ self.rot.T
        return np.stack([self.cx + self.s * q[:, 0], self.cy + self.s * q[:, 1]], 1)

    def flat(self, pts: np.ndarray) -> np.ndarray:
        """Silhouette-plane points (outline, hair mass) to pixels: squash by the view, roll."""
        x, y = pts[:, 0] * self.kx, pts[:, 1] * self.ky
        return np.stack([self.cx + self.s * (self.cr * x - self.sr * y),
                         self.cy + self.s * (self.sr * x + self.cr * y)], 1)

    def px(self, length: float) -> float:
        return length * self.s


def _fix(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * _ONE).astype(np.int32)


def _fill(img: np.ndarray, pts: np.ndarray, colour) -> None:
    cv2.fillPoly(img, [_fix(pts)], colour, _AA if img.dtype == np.uint8 else cv2.LINE_8, _SHIFT)


def _line(img: np.ndarray, pts: np.ndarray, colour, thickness: float) -> None:
    cv2.polylines(img, [_fix(pts)], False, colour, max(1, int(round(thickness))),
                  _AA if img.dtype == np.uint8 else cv2.LINE_8, _SHIFT)


def _ellipse(img: np.ndarray, centre, axes, angle: float, colour) -> None:
    centre = (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE)))
    axes = (max(1, int(round(axes[0] * _ONE))), max(1, int(round(axes[1] * _ONE))))
    cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1,
                _AA if img.dtype == np.uint8 else cv2.LINE_8, _SHIFT)


def _scaled(colour, factor: float) -> tuple[float, ...]:
    return tuple(float(min(255.0, c * factor)) for c in colour)


def _background(pose: Pose, width: int, height: int) -> np.ndarray:
    """A soft two-tone gradient wall whose tilt follows the light (not face-like)."""
    hue = float(pose.bg_hue) % 180
    sat, val = np.clip(pose.bg_sat, 0, 1) * 255, np.clip(pose.bg_value, 0, 1) * 255
    hsv = np.array([[[hue, sat, val], [(hue + 12) % 180, sat * 0.8, val * 0.62]]], np.float32)
    top, bottom = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0].astype(np.float32)
    # A linear gradient is exactly what bilinear upscaling of a tiny image gives, and cheap.
    ang = np.radians(pose.light_dir)
    yy = np.linspace(0.0, 1.0, 8, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, 8, dtype=np.float32)[None, :]
    mix = np.clip(yy - 0.35 * np.sin(ang) * xx, 0, 1)[..., None]
    small = (top * (1 - mix) + bottom * mix).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).round().astype(np.uint8)


def _outline(ident: Identity, pose: Pose, n: int = 72) -> np.ndarray:
    """The frontal face outline in head units: oval forehead, shaped jaw, chin drops when talking."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    lower = s > 0
    e = np.where(lower, 2.0 / (2.0 + 1.8 * ident.jaw), 1.0)  # superellipse: squarer jaw
    x = ident.face_width * np.sign(c) * np.abs(c) ** e
    y = ident.face_height * np.sign(s) * np.abs(s) ** e
    yl = np.clip(y / ident.face_height, 0, 1)
    x = x * (1 - (0.10 + 0.22 * ident.chin) * yl ** 2.2)      # narrower towards the chin
    x = x * (1 - 0.06 * np.clip(-y / ident.face_height, 0, 1) ** 2)  # temples
    y = y + 0.08 * pose.mouth_open * yl ** 2                    # the jaw drops with the mouth
    return np.stack([x, y], 1)


def _draw_hair_back(img: np.ndarray, head: _Head, ident: Identity) -> None:
    style = ident.hair_style
    if style in ("buzz", "bald"):
        return
    a = ident.face_width
    colour = _scaled(ident.hair_colour, 0.8)
    theta = np.linspace(np.pi, 2 * np.pi, 25)
    if style == "volume":
        bumps = 1 + 0.035 * np.sin(theta * 11 + ident.hair_part)
        cap = np.stack([np.cos(theta) * a * 1.32 * bumps, -0.2 + np.sin(theta) * 0.95 * bumps], 1)
        sides = np.array([[a * 1.3, 0.25], [a * 1.05, 0.45], [-a * 1.05, 0.45], [-a * 1.3, 0.25]])
        _fill(img, head.flat(np.concatenate([cap, sides])), colour)
    elif style in ("long", "bob"):
        bottom = 1.55 if style == "long" else 0.78
        cap = np.stack([np.cos(theta) * a * 1.16, -0.05 + np.sin(theta) * 1.04], 1)
        sides = np.array([[a * 1.22, 0.35], [a * 1.28, bottom], [a * 0.95, bottom + 0.06],
                          [-a * 0.95, bottom + 0.06], [-a * 1.28, bottom], [-a * 1.22, 0.35]])
        _fill(img, head.flat(np.concatenate([cap, sides])), colour)
    else:  # short
        cap = np.stack([np.cos(theta) * a * 1.08, -0.05 + np.sin(theta) * 1.02], 1)
        sides = np.array([[a * 1.04, 0.02], [-a * 1.04, 0.02]])
        _fill(img, head.flat(np.concatenate([cap, sides])), colour)


def _draw_body(img: np.ndarray, head: _Head, ident: Identity, height: int) -> None:
    """Neck (in shadow under the jaw) and shoulders; the body does not turn with the head."""
    s, cx, cy = head.s, head.cx, head.cy
    neck_w = ident.face_width * 0.62
    top = head.project(np.array([[-neck_w, 0.45], [neck_w, 0.45]]), dz=-0.55)
    bottom_y = cy + 1.75 * s
    neck = np.array([top[0], top[1], [cx + neck_w * 1.05 * s, bottom_y], [cx - neck_w * 1.05 * s, bottom_y]])
    _fill(img, neck, _scaled(ident.skin, 0.72))
    sh_y = cy + 1.42 * s
    t = np.linspace(0, np.pi, 20)
    shoulders = np.concatenate([
        np.array([[cx - 2.4 * s, height + 2 * s], [cx - 2.4 * s, sh_y + 0.6 * s]]),
        np.stack([cx - np.cos(t) * 1.6 * s,
                  sh_y + 0.45 * s - np.sin(t) * 0.4 * s], 1),
        np.array([[cx + 2.4 * s, sh_y + 0.6 * s], [cx + 2.4 * s, height + 2 * s]]),
    ])
    _fill(img, shoulders, ident.shirt)
    collar = np.array([[cx - neck_w * 1.05 * s, sh_y + 0.05 * s], [cx, sh_y + 0.42 * s],
                       [cx + neck_w * 1.05 * s, sh_y + 0.05 * s]])
    _fill(img, collar, _scaled(ident.skin, 0.78))


def _draw_ears(img: np.ndarray, head: _Head, ident: Identity, mask_value: int | None = None) -> None:
    """Ears behind the face outline; with mask_value, draw their silhouette into a mask instead."""
    a = ident.face_width
    centres = head.project(np.array([[-a * 0.97, ident.eye_y + 0.16], [a * 0.97, ident.eye_y + 0.16]]), dz=-0.12)
    for k, centre in enumerate(centres):
        side = -1 if k == 0 else 1
        axes = (head.px(0.075), head.px(0.19))
        outer = centre + np.array([side * head.px(0.02), 0])
        if mask_value is not None:
            _ellipse(img, outer, axes, head.roll_deg, mask_value)
            continue
        _ellipse(img, outer, axes, head.roll_deg, _scaled(ident.skin, 0.9))
        _ellipse(img, centre + np.array([side * head.px(0.025), 0]), (axes[0] * 0.45, axes[1] * 0.6),
                 head.roll_deg, _scaled(ident.skin, 0.6))


def _eye_curves(ident: Identity, pose: Pose, side: int, n: int = 17):
    """Upper and lower lid curves of one eye (frontal head units), blink and smile applied."""
    ex, ey, ew = side * ident.eye_spacing, ident.eye_y, ident.eye_width
    t = np.linspace(-1, 1, n)
    up0 = ew * ident.eye_open * (1 - t ** 2) ** 0.75
    low0 = ew * ident.eye_open * 0.62 * (1 - t ** 2) ** 1.1 * (1 - 0.3 * pose.smile)
    tilt = -ident.eye_tilt * ew * t * side  # outer corner (side * t > 0) goes up for tilt > 0
    blink = float(np.clip(pose.blink, 0, 1))
    upper_y = ey + tilt - (1 - blink) * up0 + blink * low0 * 0.8
    lower_y = ey + tilt + low0
    x = ex + t * ew
    return np.stack([x, upper_y], 1), np.stack([x, lower_y], 1), up0


def _draw_eye(img: np.ndarray, head: _Head, ident: Identity, pose: Pose, side: int) -> None:
    upper, lower, up0 = _eye_curves(ident, pose, side)
    dz = -0.05
    up_px, low_px = head.project(upper, dz), head.project(lower, dz)
    almond = np.concatenate([up_px, low_px[::-1]])
    lash = max(1.0, head.px(0.016))
    x0, y0 = np.floor(almond.min(0) - lash - 2).astype(int)
    x1, y1 = np.ceil(almond.max(0) + lash + 2).astype(int)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 > 2 and y1 - y0 > 2 and pose.blink < 0.97:
        roi = img[y0:y1, x0:x1]
        off = np.array([x0, y0], float)
        mask = np.zeros(roi.shape[:2], np.uint8)
        _fill(mask, almond - off, 255)
        layer = np.empty_like(roi)
        white = min(1.0, _SCLERA_MAX * (float(np.mean(ident.skin)) + 90) / 225.0)
        layer[:] = np.array((218 * white, 224 * white, 230 * white), np.uint8)
        iris_c = np.array([[side * ident.eye_spacing + pose.gaze_x * ident.eye_width * 0.35,
                            ident.eye_y - 0.1 * up0.max() + pose.gaze_y * up0.max() * 0.25]])
        c = head.project(iris_c, dz - 0.01)[0] - off
        r = head.px(ident.eye_width * 0.48)
        _ellipse(layer, c, (r * head.cos_yaw, r * head.cos_pitch), head.roll_deg, _scaled(ident.iris, 0.8))
        _ellipse(layer, c, (r * 0.78 * head.cos_yaw, r * 0.78 * head.cos_pitch), head.roll_deg, ident.iris)
        _ellipse(layer, c, (r * 0.42 * head.cos_yaw, r * 0.42 * head.cos_pitch), head.roll_deg, (12, 10, 10))
        _ellipse(layer, c + np.array([r * 0.3, -r * 0.3]), (r * 0.16, r * 0.16), 0, (245, 245, 245))
        m = (mask.astype(np.float32) / 255.0)[..., None]
        roi[:] = (roi * (1 - m) + layer * m).astype(np.uint8)
    lid = _scaled(ident.skin, 0.7)
    crease = upper.copy()
    crease[:, 1] -= ident.eye_width * ident.eye_open * 0.55 * (1 - 0.5 * pose.blink)
    _line(img, head.project(crease[2:-1], dz), lid, head.px(0.012))
    _line(img, up_px, (25, 20, 22), lash)
    _line(img, low_px[2:-2], _scaled(ident.skin, 0.72), max(1.0, lash * 0.45))


def _draw_brow(img: np.ndarray, head: _Head, ident: Identity, pose: Pose, side: int) -> None:
    t = np.linspace(-1, 1, 15)  # -1 inner end .. 1 outer end
    length = ident.eye_width * 1.45
    x = side * (ident.eye_spacing - 0.02 + t * length)
    arch = (0.025 + 0.04 * ident.brow_arch) * (1 - ((t - 0.15) / 1.15) ** 2)
    raise_ = 0.055 * pose.brow_raise
    inner_raise = 0.02 * max(pose.brow_raise, 0) * (1 - t) / 2
    y_mid = ident.eye_y - 0.17 - arch - raise_ - inner_raise + 0.015 * t
    half = ident.brow_thickness * (0.75 - 0.35 * t) / 1.1
    top = np.stack([x, y_mid - half], 1)
    bot = np.stack([x, y_mid + half], 1)
    _fill(img, head.project(np.concatenate([top, bot[::-1]]), 0.0), ident.brow_colour)


def _draw_nose(img: np.ndarray, head: _Head, ident: Identity) -> None:
    tip_y = ident.eye_y + ident.nose_length
    nw = ident.nose_width
    dark = _scaled(ident.skin, 0.35)
    nostrils = head.project(np.array([[-nw * 0.5, tip_y + 0.025], [nw * 0.5, tip_y + 0.025]]), 0.12)
    for c in nostrils:
        _ellipse(img, c, (head.px(nw * 0.3) * head.cos_yaw, head.px(nw * 0.14)), head.roll_deg, dark)
    t = np.linspace(0, 1, 8)
    for side in (-1, 1):
        wing = np.stack([side * nw * (0.75 + 0.3 * np.sin(np.pi * t)), tip_y - 0.06 + 0.1 * t], 1)
        _line(img, head.project(wing, 0.1), _scaled(ident.skin, 0.72), head.px(0.012))


def _mouth_curves(ident: Identity, pose: Pose, n: int = 21):
    ym = ident.eye_y + ident.nose_length + 0.2 + 0.02 * pose.mouth_open
    t = np.linspace(-1, 1, n)
    x = t * ident.mouth_width * (1 + 0.14 * pose.smile - 0.12 * pose.mouth_open)
    corners = -0.05 * pose.smile * np.abs(t) ** 2
    gap = 0.15 * pose.mouth_open * (1 - t ** 2) ** 0.8
    up_in = ym + corners - 0.3 * gap
    low_in = ym + corners + 0.7 * gap
    bow = 1 - 0.35 * np.exp(-(t / 0.13) ** 2)  # cupid's bow dip
    up_out = up_in - ident.upper_lip * (1 - t ** 2) ** 0.6 * bow * (1 - 0.3 * pose.smile)
    low_out = low_in + ident.lower_lip * (1 - t ** 2) ** 0.7 * (1 - 0.2 * pose.smile)
    return x, up_out, up_in, low_in, low_out, gap


def _draw_mouth(img: np.ndarray, head: _Head, ident: Identity, pose: Pose) -> None:
    x, up_out, up_in, low_in, low_out, gap = _mouth_curves(ident, pose)
    dz = 0.03

    def pts(y):
        return np.stack([x, y], 1)

    if pose.mouth_open > 0.02:
        _fill(img, head.project(np.concatenate([pts(up_in), pts(low_in)[::-1]]), dz), (40, 32, 78))
        teeth = np.abs(x) < ident.mouth_width * 0.75
        if teeth.sum() >= 3 and gap.max() > 0.02:
            tx = x[teeth]
            top = up_in[teeth]
            bottom = top + np.minimum(gap[teeth] * 0.45, 0.04)
            _fill(img, head.project(np.concatenate([np.stack([tx, top], 1), np.stack([tx, bottom], 1)[::-1]]), dz),
                  (205, 214, 220))
    _fill(img, head.project(np.concatenate([pts(up_out), pts(up_in)[::-1]]), dz), _scaled(ident.lip_colour, 0.88))
    _fill(img, head.project(np.concatenate([pts(low_in), pts(low_out)[::-1]]), dz), ident.lip_colour)
    _line(img, head.project(pts(up_in), dz), _scaled(ident.lip_colour, 0.45), max(1.0, head.px(0.01)))


def _hairline(ident: Identity, n: int = 25) -> np.ndarray:
    a = ident.face_width
    t = np.linspace(-1, 1, n)
    temple = ident.eye_y - 0.2
    y = ident.hairline + (temple - ident.hairline) * np.abs(t) ** 3.2
    if ident.hair_style in ("short", "long", "bob"):
        # a side-swept fringe: lower on one side
        y = y + 0.07 * np.clip(ident.hair_part * t, 0, 1) * (1 - np.abs(t)) * 2
    return np.stack([t * a * 0.99, y], 1)


_HAIR_VOLUME = {"buzz": 1.0, "short": 1.07, "long": 1.08, "bob": 1.09, "volume": 1.2}


def _hair_front(head: _Head, ident: Identity) -> np.ndarray | None:
    """Pixel polygon of the hair over the top of the head, down to the hairline (None if bald)."""
    if ident.hair_style == "bald":
        return None
    a, vol = ident.face_width, _HAIR_VOLUME[ident.hair_style]
    theta = np.linspace(np.pi, 2 * np.pi, 31)
    cap = np.stack([np.cos(theta) * a * vol * 1.01, -0.04 + np.sin(theta) * ident.face_height * vol], 1)
    hl = head.project(_hairline(ident))
    temples = head.flat(np.array([[a * 1.0, ident.eye_y - 0.2], [-a * 1.0, ident.eye_y - 0.2]]))
    return np.concatenate([head.flat(cap), temples[:1], hl[::-1], temples[1:]])


def _draw_hair_front(img: np.ndarray, head: _Head, ident: Identity, poly: np.ndarray) -> None:
    style = ident.hair_style
    a, vol = ident.face_width, _HAIR_VOLUME[style]
    if style == "buzz":
        colour = tuple(0.55 * h + 0.45 * s for h, s in zip(ident.hair_colour, ident.skin))
    else:
        colour = ident.hair_colour
    _fill(img, poly, colour)
    if style == "buzz":
        return
    # strands of highlight and shadow so the hair is not a flat patch
    light = max(colour) > 40
    for k, f in enumerate((0.93, 0.86, 0.78, 0.7, 0.62)):
        arc = np.linspace(np.pi * (1.15 + 0.03 * k), np.pi * (1.85 - 0.02 * k), 14)
        strand = np.stack([np.cos(arc) * a * vol * f,
                           -0.04 + np.sin(arc) * ident.face_height * vol * (f + 0.06)], 1)
        tone = (1.18 if k % 2 == 0 else 0.78) if light else (1.9 if k % 2 == 0 else 0.6)
        _line(img, head.flat(strand), _scaled(colour, tone), head.px(0.01))


def _shading(head: _Head, ident: Identity, pose: Pose, box: tuple[int, int, int, int]) -> np.ndarray:
    """Light multiplier over the head box: Lambert on the head ellipsoid times feature bands."""
    # Everything here is smooth, so it is computed at half resolution and upscaled.
    x0, y0, x1, y1 = box
    out_w, out_h = x1 - x0, y1 - y0
    f = 0.5
    bw, bh = max(2, int(np.ceil(out_w * f))), max(2, int(np.ceil(out_h * f)))
    bands = np.zeros((bh, bw), np.float32)
    off = np.array([x0, y0], float)
    a, ey, es, ew = ident.face_width, ident.eye_y, ident.eye_spacing, ident.eye_width
    tip_y = ey + ident.nose_length
    mouth_y = tip_y + 0.2 + 0.02 * pose.mouth_open
    cy, cp, r = head.cos_yaw, head.cos_pitch, head.roll_deg

    def blob(x, y, ax, ay, value, dz=0.0):
        c = (head.project(np.array([[x, y]]), dz)[0] - off) * f
        _ellipse(bands, c, (head.px(ax) * cy * f, head.px(ay) * cp * f), r, float(value))

    blob(0, ey - 0.42, 0.34, 0.16, 0.07)                  # forehead catches light
    for side in (-1, 1):
        blob(side * es, ey - 0.045, ew * 1.55, ew * 1.0, _SOCKET, -0.05)   # eye sockets
        blob(side * (es + ew * 0.4), ey + 0.19, 0.13, 0.075, 0.10)       # cheekbones
        blob(side * (a * 0.82), ey + 0.35, 0.14, 0.3, -0.12)             # hollow of the cheeks
        blob(side * ident.nose_width * 1.05, ey + 0.12, 0.03, 0.12, -0.12, 0.08)  # nose sides
    bridge = np.stack([np.zeros(6), np.linspace(ey - 0.1, tip_y - 0.03, 6)], 1)
    _line(bands, (head.project(bridge, np.linspace(0.02, 0.18, 6)) - off) * f, _BRIDGE, head.px(0.07) * f)
    blob(0, tip_y - 0.02, ident.nose_width * 0.6, 0.045, 0.10, 0.2)   # nose tip
    blob(0, tip_y + 0.07, ident.nose_width * 0.9, 0.04, -0.22, 0.1)    # under the nose
    blob(0, mouth_y + ident.lower_lip + 0.06 + 0.12 * pose.mouth_open, 0.09, 0.035, -0.14)  # under the lip
    blob(0, mouth_y + 0.08 * pose.mouth_open, ident.mouth_width * 1.1, 0.07 + 0.08 * pose.mouth_open, -0.06)
    if ident.hair_style != "bald":
        _line(bands, (head.project(_hairline(ident) + np.array([0, 0.03])) - off) * f, -0.15, head.px(0.06) * f)
    sigma = max(0.7, head.px(0.045) * f)
    bands = cv2.GaussianBlur(bands, (0, 0), sigma)

    # Lambert on the head ellipsoid, ray-cast in view space (orthographic camera).
    X = ((x0 + (np.arange(bw, dtype=np.float32)[None, :] + 0.5) / f - 0.5) - head.cx) / head.s
    Y = ((y0 + (np.arange(bh, dtype=np.float32)[:, None] + 0.5) / f - 0.5) - head.cy) / head.s
    d = np.diag([1 / (a * 1.08) ** 2, 1 / (ident.face_height * 1.06) ** 2, 1 / 0.95 ** 2])
    m = head.rot @ d @ head.rot.T
    qa = m[2, 2]
    qb = 2 * (m[0, 2] * X + m[1, 2] * Y)
    qc = m[0, 0] * X * X + 2 * m[0, 1] * X * Y + m[1, 1] * Y * Y - 1
    disc = np.maximum(qb * qb - 4 * qa * qc, 0)
    Z = (-qb + np.sqrt(disc)) / (2 * qa)
    nx = m[0, 0] * X + m[0, 1] * Y + m[0, 2] * Z
    ny = m[1, 0] * X + m[1, 1] * Y + m[1, 2] * Z
    nz = m[2, 0] * X + m[2, 1] * Y + m[2, 2] * Z
    norm = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-6
    k = float(np.clip(pose.light_strength, 0, 1))
    ang = np.radians(pose.light_dir)
    light = np.array([k * np.sin(ang), -k * np.cos(ang) * 0.8 - 0.2, 1.0])
    light = light / np.linalg.norm(light)
    ndl = np.clip((nx * light[0] + ny * light[1] + nz * light[2]) / norm, 0, 1)
    ambient = _AMBIENT
    lambert = (ambient + (1 - ambient) * ndl) / (ambient + (1 - ambient) * light[2])
    shade = np.clip(lambert * (1 + bands), 0.2, 1.35).astype(np.float32)
    return cv2.resize(shade, (out_w, out_h), interpolation=cv2.INTER_LINEAR)


def render_face(identity: Identity | int, pose: Pose, size: tuple[int, int] = (256, 256)) -> np.ndarray:
    """Render `identity` with `pose` into a uint8 BGR frame of `size` = (width, height).

    Deterministic: the same arguments give the same pixels. The head centre and size come from
    the pose alone, so two identities rendered with one pose put their faces in the same place.
    """
    ident = identity_from_seed(identity) if isinstance(identity, (int, np.integer)) else identity
    width, height = int(size[0]), int(size[1])
    if width < 32 or height < 32:
        raise ValueError(f"frame size {width}x{height} is too small; need at least 32x32")
    head = _Head(ident, pose, width, height)
    img = _background(pose, width, height)
    _draw_hair_back(img, head, ident)
    _draw_body(img, head, ident, height)
    _draw_ears(img, head, ident)
    outline = head.flat(_outline(ident, pose))
    _fill(img, outline, ident.skin)
    for side in (-1, 1):
        _draw_brow(img, head, ident, pose, side)
        _draw_eye(img, head, ident, pose, side)
    _draw_nose(img, head, ident)
    _draw_mouth(img, head, ident, pose)
    hair = _hair_front(head, ident)

    # Shade the head (skin, the features painted on it, ears, front hair) in one pass.
    shaded = np.zeros((height, width), np.uint8)
    _fill(shaded, outline, 255)
    if hair is not None:
        _fill(shaded, hair, 255)
        _draw_hair_front(img, head, ident, hair)
    _draw_ears(shaded, head, ident, 255)
    bx, by, bw, bh = cv2.boundingRect(shaded)
    x0, y0, x1, y1 = bx, by, bx + bw, by + bh
    if x1 - x0 > 2 and y1 - y0 > 2:
        shade = _shading(head, ident, pose, (x0, y0, x1, y1))
        m = shaded[y0:y1, x0:x1].astype(np.float32) * (1 / 255.0)
        factor = (1 + m * (shade - 1))[..., None]
        roi = img[y0:y1, x0:x1]
        lit = roi * factor
        # Soft knee above 205 so highlights on pale skin roll off instead of clipping to white.
        knee = 205.0
        lit = np.where(lit > knee, knee + (255 - knee) * np.tanh((lit - knee) / (255 - knee)), lit)
        roi[:] = np.clip(lit, 0, 255).astype(np.uint8)

    sigma = max(0.5, head.px(0.008))
    return cv2.GaussianBlur(img, (0, 0), sigma)


def render_sequence(identity: Identity | int, poses, size: tuple[int, int] = (256, 256)):
    """Yield one rendered frame per pose (a generator, so long videos need little memory)."""
    ident = identity_from_seed(identity) if isinstance(identity, (int, np.integer)) else identity
    for pose in poses:
        yield render_face(ident, pose, size)


# ----------------------------------------------------------------------------------------------
# Sidecar: the render parameters of a synthetic video, stored next to it

SIDECAR_SUFFIX = ".synth.npz"  # VIDEO.mp4 -> VIDEO.mp4.synth.npz


def sidecar_path(video_path: str) -> str:
    """Where `swapstream synth` stores the render parameters of `video_path`."""
    return str(video_path) + SIDECAR_SUFFIX


def sidecar_arrays(identity: int, poses, size: tuple[int, int], fps: float, motion_seed: int) -> dict:
    """The sidecar's arrays (plain numbers and unicode only, so `allow_pickle=False` loads them).

    identity int64 (), pose float64 (N, P), pose_names <U (P,), size int64 (2,) = width, height,
    fps float64 (), motion_seed int64 (), renderer <U () = RENDERER_VERSION.
    """
    return {
        "identity": np.int64(identity),
        "pose": poses_to_array(poses).astype(np.float64),
        "pose_names": np.asarray(POSE_FIELDS, dtype=np.str_),
        "size": np.asarray(size, dtype=np.int64),
        "fps": np.float64(fps),
        "motion_seed": np.int64(motion_seed),
        "renderer": np.str_(RENDERER_VERSION),
    }


@dataclass(frozen=True)
class SynthTake:
    """The render parameters of one synthetic video, as loaded from its sidecar."""

    identity: int
    poses: tuple[Pose, ...]
    size: tuple[int, int]
    fps: float
    motion_seed: int
    renderer: str

    def render(self, index: int, identity: Identity | int | None = None) -> np.ndarray:
        """Frame `index` again, or the same frame with another identity (its ground truth)."""
        return render_face(self.identity if identity is None else identity, self.poses[index], self.size)


def load_sidecar(path: str) -> SynthTake:
    """Load a `.synth.npz` sidecar (allow_pickle=False); raise ValueError naming what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("identity", "pose", "pose_names", "size", "fps") if k not in data.files]
            if missing:
                raise ValueError(f"synth sidecar {path} lacks {', '.join(missing)}")
            pose, names = data["pose"], data["pose_names"]
            size = tuple(int(v) for v in data["size"])
            take = SynthTake(
                identity=int(data["identity"]),
                poses=tuple(pose_from_vector(row, names) for row in pose.reshape(len(pose), -1)),
                size=(size[0], size[1]),
                fps=float(data["fps"]),
                motion_seed=int(data["motion_seed"]) if "motion_seed" in data.files else -1,
                renderer=str(data["renderer"]) if "renderer" in data.files else "unknown",
            )
    except ValueError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError ...
        raise ValueError(f"synth sidecar {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    return take
