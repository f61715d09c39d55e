"""`swapstream compare`: train every method on the same faces with the same budget and rate them.

    swapstream compare --a SET_A.npz --b SET_B.npz --out REPORT_DIR [--methods all|m1,m2]
                       [--steps N | --minutes-per-method T] [--preset cpu] [--size PX]
                       [--runs DIR] [--reuse] [--face-judge auto|off]

The face sets are split into a training part and held-out faces (runs of consecutive frames,
spread over each clip). Every method trains on the training part in its own process
(`python -m swapstream.clients.cli train ...`, so one method's TensorFlow state cannot leak into the next),
then each trained model swaps the held-out faces and is judged:

- by the real-face judge (faces/judge.py: dlib's detector, 68 landmarks and ResNet embedding, not
  trained on the pair), each swap pasted back into its source frame (trainer/compare_judge.py):
  identity transfer, mouth/eyes/turn r and MAE, detail ratio, face found. The ranking uses it
  where dlib is installed and the source videos are there;

and by the pair-trained judges (extra columns; the ranking's fallback):

- identity: a small A-versus-B classifier (trained on the training part; its own held-out
  accuracy is reported) gives P(target identity) of each swapped face;
- expression/pose preservation: on synthetic sets a pose regressor reads the render parameters
  back from the swap (compared with the source's true ones, relative to the ground truth's
  own reading); on real sets the HOG structure-RSA proxy (trainer/evaluate.py);
- SSIM/PSNR against the re-rendered ground truth (synthetic sets);
- the trainer's reconstruction loss and images/s (RUN/summary.json), inference ms per face.

The ranking weighs resemblance to the target and preservation of the source's expression and
pose equally. Writes REPORT_DIR/grid.png, metrics.json and report.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.faceset import FaceSet, load_faceset, resize_faces, save_faceset
from swapstream.faces.files import write_png, write_text
from swapstream.trainer import compare_judge as cj
from swapstream.trainer import evaluate as ev
from swapstream.trainer.methods import METHODS, get_preset, shared_preset_names
from swapstream.trainer.preset import DEFAULT_PRESET

PROG = "swapstream compare"
GRID_CELL = 128  # pixels per face in grid.png (a 2x head's faces at their own size)
JUDGE_SIZE = 64  # the identity classifier and pose regressor look at 64 px faces


def log(message: str) -> None:
    """One progress line on stderr (stdout stays free for the final summary)."""
    print(f"[compare] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- arguments

def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="face set of identity A (.npz)")
    parser.add_argument("--b", required=True, help="face set of identity B (.npz)")
    parser.add_argument("--out", required=True, help="report folder (grid.png, metrics.json, report.md)")
    parser.add_argument("--methods", default="all",
                        help=f"all, or a comma-separated list of {', '.join(METHODS)} (default all)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps per method")
    budget.add_argument("--minutes-per-method", type=float, help="training minutes per method (default 10)")
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"trainer preset every method has: {' | '.join(shared_preset_names())} "
                             f"(default {DEFAULT_PRESET})")
    parser.add_argument("--size", type=int, help="training image size (default: the preset's)")
    parser.add_argument("--batch", type=int, help="batch size for every method (default: the preset's)")
    parser.add_argument("--runs", help="folder of the training runs (default REPORT_DIR/runs)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep finished runs in --runs (resume unfinished ones) instead of training anew")
    parser.add_argument("--holdout", type=float, default=0.2, help="fraction of faces held out (default 0.2)")
    parser.add_argument("--rows", type=int, default=4, help="faces per identity in grid.png (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the judges (default 0)")
    parser.add_argument("--face-judge", choices=("auto", "off"), default="auto",
                        help="auto: rate the swaps with the real-face judge (dlib) where it can run, and rank by "
                             "it; off: the pair-trained judges only (default auto)")
    parser.add_argument("--judge-reference-frames", type=int, default=cj.REFERENCE_FRAMES,
                        help="training frames per identity the real-face judge embeds for its mean "
                             f"(default {cj.REFERENCE_FRAMES})")
    return parser


def parse_methods(text: str) -> list[str]:
    """'all' or 'm1,m2' -> method names, checked against the registry's."""
    if text.strip() == "all":
        return list(METHODS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise InputError(f"unknown method(s) {', '.join(unknown) or text!r}; valid: all, {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise InputError(f"--methods names a method twice: {text}")
    return names


# ---------------------------------------------------------------- data

@dataclass
class Split:
    """A face set cut into the faces the methods train on and the held-out faces they are judged on."""

    name: str            # "a" or "b"
    full: FaceSet
    train_idx: np.ndarray
    test_idx: np.ndarray
    train_path: str = ""

    @property
    def train(self) -> FaceSet:
        return self.full.subset(self.train_idx)

    @property
    def test(self) -> FaceSet:
        return self.full.subset(self.test_idx)


def prepare_splits(path_a: str, path_b: str, data_dir: str, holdout: float) -> tuple[Split, Split]:
    """Load both sets, hold faces out, and write the training parts to data_dir/train_{a,b}.npz.

    An existing training file with the same faces is left alone (so `--reuse` runs see the same
    file); one with other faces is an error, not silently replaced.
    """
    if not 0.05 <= holdout <= 0.5:
        raise InputError(f"--holdout must be within 0.05..0.5, got {holdout}")
    fa, fb = load_faceset(path_a, min_faces=8), load_faceset(path_b, min_faces=8)
    if os.path.abspath(path_a) == os.path.abspath(path_b):
        raise InputError("--a and --b are the same face set")
    if fa.size != fb.size:
        raise InputError(f"face sets differ in crop size: {fa.size} px ({path_a}) vs {fb.size} px ({path_b})")
    if fa.template != fb.template:
        raise InputError(f"face sets were aligned differently: {fa.template} ({path_a}) vs {fb.template} ({path_b}); "
                         "extract both with the same template")
    if fa.template is None and abs(fa.margin - fb.margin) > 1e-6:
        raise InputError(f"face sets were cut with different margins: {fa.margin} vs {fb.margin}")
    splits = []
    for name, fs, path in (("a", fa, path_a), ("b", fb, path_b)):
        fs.source = resolve_sources(fs.source, path)
        train_idx, test_idx = ev.holdout_split(len(fs), holdout)
        split = Split(name, fs, train_idx, test_idx, os.path.join(data_dir, f"train_{name}.npz"))
        _write_train_set(split)
        splits.append(split)
    return splits[0], splits[1]


def resolve_sources(sources: np.ndarray, set_path: str) -> np.ndarray:
    """Source video paths made absolute where the video can be found (from the current folder,
    else relative to the face set's folder): re-rendering the ground truth needs the synth
    sidecar or header of each video, and `extract` stores the paths as it was given them."""
    out = []
    for src in sources.tolist():
        if not os.path.isabs(src):
            beside = os.path.join(os.path.dirname(os.path.abspath(set_path)), src)
            if os.path.isfile(src):
                src = os.path.abspath(src)
            elif os.path.isfile(beside):
                src = beside
        out.append(src)
    return np.asarray(out, dtype=np.str_)


def _write_train_set(split: Split) -> None:
    train = split.train
    if os.path.isfile(split.train_path):
        old = load_faceset(split.train_path)
        if old.faces.shape == train.faces.shape and np.array_equal(old.faces, train.faces):
            return
        raise InputError(f"{split.train_path} holds other faces than this comparison's training split; "
                         "use another --runs folder")
    save_faceset(split.train_path, train)


# ---------------------------------------------------------------- training

@dataclass
class Budget:
    steps: int | None
    minutes: float | None

    def args(self) -> list[str]:
        return ["--steps", str(self.steps)] if self.steps else ["--minutes", f"{self.minutes:g}"]

    def describe(self) -> str:
        return f"{self.steps} steps" if self.steps else f"{self.minutes:g} minutes"


def train_command(method: str, run_dir: str, a: str, b: str, budget: Budget, preset: str,
                  size: int | None, batch: int | None, resume: bool) -> list[str]:
    """The `swapstream train` command line for one method (run with this Python)."""
    cmd = [sys.executable, "-m", "swapstream.clients.cli", "train", "--method", method, "--a", a, "--b", b,
           "--out", run_dir, "--preset", preset, *budget.args()]
    if size:
        cmd += ["--size", str(size)]
    if batch:
        cmd += ["--batch", str(batch)]
    if resume:
        cmd.append("--resume")
    return cmd


def run_finished(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, "summary.json"))


def check_run_matches(run_dir: str, method: str, split_a: Split, split_b: Split) -> None:
    """Refuse to reuse a run of another method or trained on other face sets."""
    from swapstream.trainer.runs import read_run_config

    cfg = read_run_config(run_dir)
    if cfg.method != method:
        raise InputError(f"{run_dir} is a run of {cfg.method}, not {method}")
    for name, have, want in (("A", cfg.data.a, split_a.train_path), ("B", cfg.data.b, split_b.train_path)):
        if os.path.abspath(have) != os.path.abspath(want):
            raise InputError(f"{run_dir} was trained on {have} as {name}, not on this comparison's "
                             f"training split {want}; use another --runs folder")


def train_all(methods: list[str], runs: str, split_a: Split, split_b: Split, budget: Budget, args) -> dict[str, str]:
    """Train (or reuse) every method; returns {method: error message} for the ones that failed."""
    failed: dict[str, str] = {}
    for k, method in enumerate(methods, 1):
        run_dir = os.path.join(runs, method)
        if args.reuse and os.path.isfile(os.path.join(run_dir, "config.yaml")):
            check_run_matches(run_dir, method, split_a, split_b)
        if args.reuse and run_finished(run_dir):
            log(f"{k}/{len(methods)} {method}: reusing finished run {run_dir}")
            continue
        resume = args.reuse and os.path.isdir(run_dir) and bool(os.listdir(run_dir))
        log(f"{k}/{len(methods)} {method}: {'resuming' if resume else 'training'} for {budget.describe()} "
            f"(preset {args.preset}) -> {run_dir}")
        cmd = train_command(method, run_dir, split_a.train_path, split_b.train_path, budget,
                            args.preset, args.size, args.batch, resume)
        start = time.perf_counter()
        # The trainer's own progress output passes straight through to this terminal.
        rc = subprocess.call(cmd, env={**os.environ,
                                       "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
        took = time.perf_counter() - start
        if rc != 0 or not run_finished(run_dir):
            failed[method] = f"`swapstream train` exited with {rc} after {took:.0f} s"
            log(f"{k}/{len(methods)} {method}: FAILED ({failed[method]})")
        else:
            log(f"{k}/{len(methods)} {method}: trained in {took:.0f} s")
    return failed


# ---------------------------------------------------------------- judging

@dataclass
class Judges:
    """What every method is judged with, trained once per comparison."""

    classifier: ev.IdentityClassifier
    synthetic: bool
    regressor: ev.PoseRegressor | None = None
    truth_ab: np.ndarray | None = None   # ground truth of the held-out A faces as B (uint8, set size)
    truth_ba: np.ndarray | None = None
    pose_a: np.ndarray | None = None     # true expression/pose parameters of held-out A faces
    pose_b: np.ndarray | None = None
    notes: dict = field(default_factory=dict)
    groups_a: np.ndarray | None = None   # held-out run of each held-out face (see structure_rsa)
    groups_b: np.ndarray | None = None
    template: object = None              # the sets' AlignTemplate (None: Haar squares)

    def face_mask(self, size: int) -> np.ndarray:
        """The face region SSIM and PSNR are measured in: the template's, or the central ellipse."""
        if self.template is None:
            return ev.face_mask(size)
        from swapstream.faces.regions import face_mask

        return face_mask(self.template, size)


def build_judges(split_a: Split, split_b: Split, seed: int) -> Judges:
    """Train the identity classifier (and on synthetic sets render ground truths, train the pose
    regressor)."""
    size = min(JUDGE_SIZE, split_a.full.size)
    synthetic = ev.is_synthetic(split_a.full) and ev.is_synthetic(split_b.full)
    train_a, train_b = split_a.train.faces, split_b.train.faces
    judges_notes = {}
    truth_ab = truth_ba = None
    if synthetic:
        id_a, id_b = ev.identity_of(split_a.full), ev.identity_of(split_b.full)
        if id_a == id_b:
            raise InputError(f"both face sets show synthetic identity {id_a}")
        log("rendering ground truths of the held-out faces")
        truth_ab = ev.ground_truth_faces(split_a.test, id_b)
        truth_ba = ev.ground_truth_faces(split_b.test, id_a)
        # The classifier also sees each identity in the other clip's poses, light and
        # background, so it learns who is drawn rather than which take a frame came from.
        train_a = np.concatenate([train_a, ev.ground_truth_faces(split_b.train, id_a)])
        train_b = np.concatenate([train_b, ev.ground_truth_faces(split_a.train, id_b)])
    log(f"training the identity classifier on {len(train_a)} + {len(train_b)} faces at {size} px")
    clf = ev.train_identity_classifier(train_a, train_b, split_a.test.faces, split_b.test.faces,
                                       size=size, seed=seed)
    log(f"identity classifier: held-out accuracy {clf.accuracy:.3f} ({clf.seconds:.0f} s)")
    judges = Judges(clf, synthetic, truth_ab=truth_ab, truth_ba=truth_ba, notes=judges_notes,
                    groups_a=ev.runs_of(split_a.test_idx), groups_b=ev.runs_of(split_b.test_idx),
                    template=split_a.full.template)
    if synthetic:
        ids = [ev.identity_of(split_a.full), ev.identity_of(split_b.full), *ev.EXTRA_JUDGE_IDENTITIES[:2]]
        log(f"training the pose regressor on renders of identities {ids}")
        reg = ev.train_pose_regressor([split_a.train, split_b.train], ids, size=size, seed=seed)
        judges.regressor = reg
        judges.notes["pose_identities"] = len(ids)
        judges.pose_a = ev.pose_columns(split_a.test, reg.names)
        judges.pose_b = ev.pose_columns(split_b.test, reg.names)
        log(f"pose regressor: {reg.n_train} faces, {reg.seconds:.0f} s; reads {', '.join(reg.names)}")
    return judges


def judge_swaps(judges: Judges, src_a: np.ndarray, swap_ab: np.ndarray, src_b: np.ndarray,
                swap_ba: np.ndarray) -> dict:
    """All quality figures of one set of swaps (uint8 or 0..1 faces, any common size)."""
    out: dict = {}
    p_ab = judges.classifier.p_target(swap_ab, "b")
    p_ba = judges.classifier.p_target(swap_ba, "a")
    out["identity"] = {"a2b": float(p_ab.mean()), "b2a": float(p_ba.mean()),
                       "mean": float(0.5 * (p_ab.mean() + p_ba.mean())),
                       "share_judged_target": float(0.5 * ((p_ab >= 0.5).mean() + (p_ba >= 0.5).mean()))}
    rsa_ab = ev.structure_rsa(src_a, swap_ab, judges.groups_a)
    rsa_ba = ev.structure_rsa(src_b, swap_ba, judges.groups_b)
    out["structure_rsa"] = {"a2b": rsa_ab, "b2a": rsa_ba, "mean": 0.5 * (rsa_ab["score"] + rsa_ba["score"])}
    # Sharpness relative to the real faces of the target at the same size (1 = as crisp).
    def crispness(swaps, target_faces):
        real = ev.sharpness(resize_faces(ev.as_uint8(target_faces), swaps.shape[1])).mean()
        return ev.sharpness(swaps).mean() / max(real, 1e-9)

    sh_ab, sh_ba = crispness(swap_ab, src_b), crispness(swap_ba, src_a)
    out["sharpness"] = {"a2b": float(sh_ab), "b2a": float(sh_ba), "mean": float(0.5 * (sh_ab + sh_ba))}
    if judges.synthetic:
        s = swap_ab.shape[1]
        t_ab = resize_faces(judges.truth_ab, s)
        t_ba = resize_faces(judges.truth_ba, s)
        mask = judges.face_mask(s)
        # "ssim"/"psnr": within the face region, the part a swap is pasted back with;
        # "*_crop": the whole square crop, background included.
        for key, fn, m in (("ssim", ev.ssim, mask), ("psnr", ev.psnr, mask),
                           ("ssim_crop", ev.ssim, None), ("psnr_crop", ev.psnr, None)):
            ab, ba = fn(swap_ab, t_ab, mask=m).mean(), fn(swap_ba, t_ba, mask=m).mean()
            out[key] = {"a2b": float(ab), "b2a": float(ba), "mean": float(0.5 * (ab + ba))}
        reg = judges.regressor
        pa, pb = reg.preservation(swap_ab, judges.pose_a), reg.preservation(swap_ba, judges.pose_b)
        out["pose"] = {"a2b": pa, "b2a": pb, "mean": 0.5 * (pa + pb),
                       "error_per_parameter": dict(zip(reg.names, np.concatenate(
                           [reg.errors(swap_ab, judges.pose_a), reg.errors(swap_ba, judges.pose_b)]
                       ).mean(0).round(4).tolist()))}
    return out


def raw_preservation(result: dict, truth: dict | None) -> float:
    """Expression/pose preservation before clipping: synthetic, the pose regressor's score
    relative to its score on the ground truth (1 = as well kept as in a perfect swap, below 0 =
    worse than guessing the mean pose); real, the structure-RSA proxy."""
    if "pose" in result and truth is not None:
        return float(result["pose"]["mean"] / max(truth["pose"]["mean"], 1e-6))
    return float(result["structure_rsa"]["mean"])


def preservation_of(result: dict, truth: dict | None) -> float:
    """The 0..1 expression/pose preservation used in the ranking (raw_preservation clipped)."""
    return float(np.clip(raw_preservation(result, truth), 0.0, 1.0))


def judged_size(methods: list[str], preset: str, size: int | None, crop_size: int) -> int:
    """The side every swap and reference is judged at: the largest output side among the
    methods (a 2x head's faces keep their detail), at most the face sets' own side."""
    return min(crop_size, max(output_side(m, preset, size) for m in methods))


def output_side(method: str, preset: str, size: int | None) -> int:
    """The side of the faces `method`'s network draws at this preset (2x its input with the 2x head)."""
    from swapstream.trainer.methods import preset_config
    from swapstream.trainer.methods.configs import io_sizes

    return io_sizes(preset_config(method, preset, size))[1]


def prepare_face_judge(split_a: Split, split_b: Split, args) -> tuple[cj.FaceJudgeSession | None, str]:
    """The real-face judge with both held-out sets' frames observed, or (None, why not)."""
    if args.face_judge == "off":
        return None, "off (--face-judge off)"
    log("real-face judge: reading and observing the held-out faces' frames and the reference frames")
    try:
        face = cj.prepare({"a": split_a.train, "b": split_b.train}, {"a": split_a.test, "b": split_b.test},
                          args.judge_reference_frames)
    except cj.JudgeSkipped as exc:
        log(f"real-face judge skipped: {exc}")
        return None, f"skipped: {exc}"
    log(f"real-face judge ready ({face.seconds:.0f} s)")
    return face, "dlib"


def evaluate_method(method: str, run_dir: str, judges: Judges, split_a: Split, split_b: Split,
                    judge_size: int | None = None, face: cj.FaceJudgeSession | None = None) -> dict:
    """Load a finished run, swap the held-out faces both ways, judge them at `judge_size`
    (default: the network's output side) with the pair-trained judges and, given `face`, with the
    real-face judge at the network's own output side (pasted into the source frames); time inference."""
    from swapstream.trainer.runs import load_run

    model = load_run(run_dir)
    size, out_size = model.input_size, model.output_size
    judge_size = judge_size or out_size
    src_a = ev.as_float(resize_faces(split_a.test.faces, size))
    src_b = ev.as_float(resize_faces(split_b.test.faces, size))
    net_ab, net_ba = model.inference_model("a2b"), model.inference_model("b2a")
    swap_ab = np.clip(np.asarray(net_ab.predict(src_a, batch_size=32, verbose=0)), 0.0, 1.0)
    swap_ba = np.clip(np.asarray(net_ba.predict(src_b, batch_size=32, verbose=0)), 0.0, 1.0)
    face_judge = face.rate({"a2b": swap_ab, "b2a": swap_ba}) if face is not None else None
    swap_ab, swap_ba = resize_faces(swap_ab, judge_size), resize_faces(swap_ba, judge_size)
    result = judge_swaps(judges, ev.as_float(resize_faces(split_a.test.faces, judge_size)), swap_ab,
                         ev.as_float(resize_faces(split_b.test.faces, judge_size)), swap_ba)
    result["inference"] = ev.inference_ms(net_ab, src_a)
    result["size"] = size
    result["output_size"] = out_size
    if face_judge is not None:
        result["face_judge"] = face_judge
    summary = ev.read_summary(run_dir)
    result["training"] = training_figures(summary, getattr(model, "progress_metric", "l1"))
    result["swaps"] = {"a2b": ev.as_uint8(swap_ab), "b2a": ev.as_uint8(swap_ba)}  # for the grid, not JSON
    return result


def training_figures(summary: dict, progress_metric: str = "l1") -> dict:
    """The trainer's own figures from RUN/summary.json; `progress_metric` names the loss that
    measures reconstruction for this method (pixel L1; the cycle reconstruction for CycleGAN)."""
    losses = summary.get("final_losses") or {}
    return {
        "steps": summary.get("step"),
        # All sessions of a resumed run ("seconds" is the last session's alone).
        "seconds": summary.get("training_seconds", summary.get("seconds")),
        "images_per_second": summary.get("images_per_second"),
        "seconds_per_step": summary.get("seconds_per_step"),
        "batch_size": summary.get("batch_size"),
        "reconstruction_loss": losses.get(progress_metric),
        "reconstruction_metric": progress_metric,
        "final_losses": losses,
        "parameters": (summary.get("parameters") or {}).get("total"),
        "inference_parameters": (summary.get("parameters") or {}).get("inference"),
        "stop_reason": summary.get("stop_reason"),
    }


# ---------------------------------------------------------------- ranking and report

FACE_JUDGE_R = ("mouth_r", "eyes_r", "turn_r")


def face_judge_halves(row: dict) -> tuple[float, float]:
    """(identity, expression) in 0..1 from a real-face judge row (the two directions' mean):
    the identity transfer and the mean of the mouth, eyes and head-turn r, each clipped to 0..1 and
    multiplied by the share of swaps where dlib found a face at all (a swap that is not a face
    scores 0, not "no data")."""
    found = row.get("face_found") or 0.0
    transfer = row.get("transfer")
    ident = float(np.clip(transfer if transfer is not None else 0.0, 0.0, 1.0)) * found
    rs = [row.get(k) for k in FACE_JUDGE_R]
    expr = float(np.clip(np.mean([r if r is not None else 0.0 for r in rs]), 0.0, 1.0)) * found
    return ident, expr


def pair_score(result: dict) -> float:
    """The pair-trained judges' score: 0.5 * P(target) + 0.5 * preservation."""
    return 0.5 * result["identity"]["mean"] + 0.5 * result["preservation"]


def rank(methods: dict[str, dict]) -> list[dict]:
    """Score = 0.5 * identity + 0.5 * preservation, best first, with one line of reasoning each.

    With the real-face judge's figures on every method (`face_judge`), identity is its transfer
    and preservation the mean mouth/eyes/turn r (`face_judge_halves`); otherwise the pair-trained
    judges' P(target) and preservation. Ties (to 3 decimals, e.g. when every method keeps nothing
    of the source) are broken by the unclipped preservation, then by SSIM against the ground
    truth where there is one. Each row also carries the pair-trained judges' `pair_score`.
    """
    by_face = bool(methods) and all("face_judge" in r for r in methods.values())
    rows = []
    for m, r in methods.items():
        if by_face:
            ident, pres = face_judge_halves(r["face_judge"]["mean"])
            raw = pres
        else:
            ident, pres = r["identity"]["mean"], r["preservation"]
            raw = r.get("preservation_raw", pres)
        rows.append({"method": m, "identity": ident, "preservation": pres, "preservation_raw": raw,
                     "score": 0.5 * ident + 0.5 * pres, "pair_score": pair_score(r),
                     "judge": "face judge" if by_face else "pair-trained judges"})
    rows.sort(key=lambda row: (round(row["score"], 3), round(row["preservation_raw"], 3),
                               methods[row["method"]].get("ssim", {}).get("mean", 0.0)), reverse=True)
    if not rows:
        return rows
    best_id = max(r["identity"] for r in rows)
    best_pres = max(r["preservation"] for r in rows)
    for place, row in enumerate(rows, 1):
        row["place"] = place
        row["reason"] = _reason(row, best_id, best_pres, methods[row["method"]])
    return rows


def _describe(value: float, strong: float, weak: float) -> str:
    return "strong" if value >= strong else ("weak" if value < weak else "middling")


def _reason(row: dict, best_id: float, best_pres: float, result: dict) -> str:
    ident, pres = row["identity"], row["preservation"]
    if row["judge"] == "face judge":
        fj = result["face_judge"]["mean"]
        parts = [f"nearer the target than the source in {_pct(fj['nearer_target'])} of held-out swaps, identity "
                 f"transfer {_fmt(fj['transfer'], 2)} ({_describe(ident, 0.8, 0.5)})",
                 f"{_describe(pres, 0.8, 0.5)} expression (r mouth {_fmt(fj['mouth_r'], 2)}, eyes "
                 f"{_fmt(fj['eyes_r'], 2)}, turn {_fmt(fj['turn_r'], 2)})",
                 f"detail {_fmt(fj['detail'], 2)} of the source's"]
        if fj["face_found"] is not None and fj["face_found"] < 0.99:
            parts.append(f"dlib finds a face in only {_pct(fj['face_found'])} of its swaps")
        if ident < 0.3 and pres >= 0.8:
            parts.append("mostly copies the source instead of swapping")
        if "ssim" in result:
            parts.append(f"SSIM to the ground truth {result['ssim']['mean']:.3f}")
        parts.append(f"pair-trained judges' score {row['pair_score']:.3f}")
        return "; ".join(parts)
    parts = [f"judged the target in {100 * result['identity']['share_judged_target']:.0f}% of held-out swaps "
             f"(P = {ident:.2f}, {_describe(ident, 0.8, 0.5)})",
             f"keeps {_describe(pres, 0.7, 0.4)} expression/pose ({pres:.2f}"
             + (f", unclipped {row['preservation_raw']:.2f})" if abs(row["preservation_raw"] - pres) > 1e-9 else ")")]
    if ident >= best_id - 1e-9 and pres >= best_pres - 1e-9 and ident >= 0.5 and pres >= 0.4:
        parts.append("best on both halves")
    elif ident >= best_id - 1e-9 and ident >= 0.5:
        parts.append("the most convincing identity")
    elif pres >= best_pres - 1e-9 and pres >= 0.4:
        parts.append("the best at following the source")
    if ident < 0.5 and pres >= 0.7:
        parts.append("mostly copies the source instead of swapping")
    elif ident >= 0.8 and pres < 0.4:
        parts.append("draws the target but ignores what the source does")
    if "ssim" in result:
        parts.append(f"SSIM to the ground truth {result['ssim']['mean']:.3f}")
    return "; ".join(parts)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


FACE_COLUMNS = (("face found", "face_found", 2), ("nearer target", "nearer_target", 2),
                ("transfer", "transfer", 2), ("same-person target", "same_person_target", 2),
                ("dist target", "dist_target", 2), ("mouth r", "mouth_r", 2), ("mouth MAE", "mouth_mae", 2),
                ("eyes r", "eyes_r", 2), ("eyes MAE", "eyes_mae", 2), ("turn r", "turn_r", 2),
                ("turn MAE", "turn_mae", 2), ("detail", "detail", 2))


def face_judge_lines(info: dict, methods: dict[str, dict], references: dict[str, dict], ranking: list[dict],
                     ceilings: dict[str, dict]) -> list[str]:
    """The report's real-face judge section: one table (methods, then reference rows) and its notes."""
    synthetic = info["synthetic"]
    scored = {row["method"]: row for row in ranking}
    head = ["method", "score", "in -> out px"] + [c[0] for c in FACE_COLUMNS] + (
        ["SSIM vs truth (face)"] if synthetic else [])
    lines = ["## Real-face judge (dlib; not trained on the pair)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(name: str, row: dict, score: float | None, sizes: str, ssim: float | None) -> str:
        out = [name, _fmt(score), sizes] + [_fmt(row.get(key), digits) for _, key, digits in FACE_COLUMNS]
        if synthetic:
            out.append(_fmt(ssim))
        return "| " + " | ".join(out) + " |"

    for name, r in methods.items():
        lines.append(cells(f"**{name}**", r["face_judge"]["mean"], scored[name]["score"],
                           f"{r['size']} -> {r['output_size']}", r.get("ssim", {}).get("mean")))
    set_px = str(info["crop_size"])
    for name, r in references.items():
        if "face_judge" not in r:
            continue
        fj = r["face_judge"]["mean"]
        lines.append(cells(f"_{name}_", fj, 0.5 * sum(face_judge_halves(fj)),
                           "frame" if name == "source copy" else set_px, r.get("ssim", {}).get("mean")))
    if "face_judge_target" in references.get("target faces", {}):
        fj = references["target faces"]["face_judge_target"]["mean"]
        lines.append(cells("_target's own frames_", fj, None, "frame", None))
    for name, r in ceilings.items():
        lines.append(cells(f"_{name}_", r["mean"], 0.5 * sum(face_judge_halves(r["mean"])), name.split()[1], None))
    refs = info.get("face_judge_reference_frames", {})
    lines += [
        "",
        "- Each held-out face's swap pasted back into its source frame (aligned sets: the inverse warp with "
        "the template's blend mask, as the server pastes; no colour transfer), then read by dlib's detector, "
        "68 landmarks and ResNet embedding (faces/judge.py). Directions A->B and B->A averaged "
        "(metrics.json `face_judge` has each).",
        "- transfer: 0 = the held-out source faces' margin d(A) - d(B), 1 = the target's held-out faces' margin; "
        f"the means of A and B come from {refs.get('a', '?')} and {refs.get('b', '?')} evenly spaced training "
        "frames. same-person: share under dlib's 0.6 distance to the target's mean. r and MAE (in source "
        "spreads) of mouth opening, eye openness and head turn against the source frame. detail: Laplacian "
        "variance inside the source's landmark hull with the face scaled 128 px wide, swap over source.",
        "- score = 0.5 x transfer + 0.5 x mean of the three r, each clipped to 0..1 and multiplied by the "
        "share of swaps where dlib finds a face.",
        "- Reference rows: _source copy_ (the frames unswapped: transfer 0, r 1, detail 1 by construction); "
        + ("_ground truth_ (the re-rendered perfect swap, pasted like a swap); " if synthetic else "")
        + "_target faces_ (held-out faces of the target in clip order pasted into the source's frames: the "
        "chance level of r; the outline and turn stay the source's, since only the face region is pasted); "
        "_target's own frames_ (identity only: transfer 1 by construction); _ceiling N px_ (each source face "
        "cut through its crop, resized to N px and pasted back with no network: the best a network drawing "
        "N px can reach).",
        "",
    ]
    return lines


def write_report(path: str, info: dict, methods: dict[str, dict], references: dict[str, dict],
                 ranking: list[dict], failed: dict[str, str], ceilings: dict[str, dict] | None = None) -> None:
    """report.md: setup, judges, the real-face judge's table (where it ran), the pair-trained
    judges' table (methods and reference rows), the ranking."""
    synthetic = info["synthetic"]
    face = bool(methods) and all("face_judge" in r for r in methods.values())
    lines = [f"# Method comparison: {info['set_a_name']} (A) vs {info['set_b_name']} (B)", ""]
    lines += [
        f"- Face sets: A `{info['set_a']}` ({info['faces_a']} faces), B `{info['set_b']}` ({info['faces_b']} faces), "
        f"{info['crop_size']} px crops, "
        + ("aligned to a landmark template" if info.get("aligned") else f"margin {info['margin']:g}") + "; "
        f"{'synthetic (ground truth available)' if synthetic else 'real (no ground truth)'}; every swap and "
        f"reference judged at {info.get('judged_size', info['crop_size'])} px (smaller outputs resized up).",
        f"- Held out for judging: {info['held_out_a']} faces of A and {info['held_out_b']} of B "
        "(runs of consecutive frames spread over each clip; never trained on).",
        f"- Budget: {info['budget']} per method, preset `{info['preset']}`"
        + (f", size {info['size']} px" if info.get("size") else "") + ", each method in its own process.",
        f"- Identity judge: A-vs-B CNN at {info['judge_size']} px, held-out accuracy "
        f"{info['classifier_accuracy']:.3f} on {info['held_out_a']} + {info['held_out_b']} faces.",
    ]
    if info["classifier_accuracy"] < 0.8:
        lines.append(f"- **Warning: the identity judge is unreliable here** (held-out accuracy "
                     f"{info['classifier_accuracy']:.2f}); its P(target) says little.")
    if synthetic:
        lines.append(f"- Pose judge: CNN regressor of {', '.join(info['pose_names'])} trained on renders of "
                     f"{info['pose_identities']} identities in training-split poses; it reads the ground truth "
                     f"with preservation {references['ground truth']['pose']['mean']:.3f} (that is 1.00 below).")
    else:
        lines.append("- Expression/pose preservation proxy (no ground truth): HOG structure RSA over face, eyes "
                     "and mouth (trainer/evaluate.py `structure_rsa`; docs/compare.md says why).")
    lines.append(f"- Real-face judge: {info.get('face_judge_note', 'not run')}; ranking by the "
                 f"{ranking[0]['judge'] if ranking else '-'}.")
    lines += ["- Timings come from one run on this machine, which may have been busy with other jobs: "
              "compare them within this table only.", ""]
    if face:
        lines += face_judge_lines(info, methods, references, ranking, ceilings or {})
    lines += ["## Pair-trained judges" + (" (extra columns)" if face else ""), ""]
    head = ["method", "pair score", "P(target)", "preservation"] + (["(unclipped)"] if synthetic else [])
    if synthetic:
        head += ["SSIM vs truth (face)", "PSNR vs truth (face)", "SSIM (crop)"]
    head += ["structure RSA", "sharpness", "recon. loss", "params (M)", "steps", "train min", "train img/s",
             "infer ms/face (b1)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    scored = {row["method"]: row for row in ranking}

    def row_for(name: str, r: dict, score: float | None) -> str:
        t = r.get("training", {})
        cells = [name, _fmt(score), _fmt(r["identity"]["mean"]), _fmt(r["preservation"])]
        if synthetic:
            cells.append(_fmt(r.get("preservation_raw")))
        if synthetic:
            cells += [_fmt(r["ssim"]["mean"]), _fmt(r["psnr"]["mean"], 2), _fmt(r["ssim_crop"]["mean"])]
        params = t.get("parameters")
        cells += [_fmt(r["structure_rsa"]["mean"]), _fmt(r["sharpness"]["mean"], 2),
                  _fmt(t.get("reconstruction_loss"), 4),
                  _fmt(params / 1e6 if params else None, 2), _fmt(t.get("steps")),
                  _fmt(t["seconds"] / 60.0 if t.get("seconds") else None, 1),
                  _fmt(t.get("images_per_second"), 1),
                  _fmt(r.get("inference", {}).get("batch1_ms"), 2)]
        return "| " + " | ".join(cells) + " |"

    for name in methods:
        lines.append(row_for(f"**{name}**", methods[name], scored[name]["pair_score"]))
    for name, r in references.items():
        lines.append(row_for(f"_{name}_", r, 0.5 * r["identity"]["mean"] + 0.5 * r["preservation"]))
    for name, why in failed.items():
        lines.append(f"| **{name}** | failed: {why} |" + " |" * (len(head) - 2))
    lines += ["", "- pair score = 0.5 x P(target) + 0.5 x preservation; directions A->B and B->A are averaged "
              "(metrics.json has each). Preservation: "
              + ("the pose judge's reading relative to the ground truth's" if synthetic else "the structure RSA")
              + ", clipped to 0..1 (unclipped beside it).",
              "- Reference rows (italic) are not methods: _source copy_ returns the source unchanged; "
              "_target faces_ returns held-out faces of the target in clip order, ignoring the source "
              "(the chance level of preservation)"
              + ("; _ground truth_ is the re-rendered perfect swap." if synthetic else "."),
              "- sharpness: Laplacian variance of the swaps relative to the target's real faces (1 = as crisp).",
              "", "## Ranking", ""]
    for row in ranking:
        lines.append(f"{row['place']}. **{row['method']}** (score {row['score']:.3f}): {row['reason']}.")
    lines += ["", "## Grid", "", "![grid](grid.png)", "",
              "Rows: held-out faces of A (swapped A->B), then of B (swapped B->A). Columns: the source"
              + (", the ground truth" if synthetic else "") + ", then each method's swap.", ""]
    write_text(path, "\n".join(lines))


def make_grid(src_a: np.ndarray, src_b: np.ndarray, columns: list[tuple[str, np.ndarray, np.ndarray]],
              cell: int = GRID_CELL) -> np.ndarray:
    """The visual rating sheet: a header row naming the columns, then one row per source face.

    `columns` is [(name, faces for the A rows, faces for the B rows)], each uint8 (N,S,S,3).
    """
    label_w, header_h = 56, 30

    def up(face: np.ndarray) -> np.ndarray:
        return cv2.resize(ev.as_uint8(face)[0], (cell, cell), interpolation=cv2.INTER_CUBIC)

    all_cols = [("source", src_a, src_b), *columns]
    rows = len(src_a) + len(src_b)
    sheet = np.full((header_h + rows * cell, label_w + len(all_cols) * cell, 3), 255, np.uint8)
    for c, (name, _, _) in enumerate(all_cols):
        scale = 0.45 if len(name) > 9 else 0.5
        cv2.putText(sheet, name, (label_w + c * cell + 4, 20), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    for r in range(rows):
        in_a = r < len(src_a)
        i = r if in_a else r - len(src_a)
        y = header_h + r * cell
        cv2.putText(sheet, "A->B" if in_a else "B->A", (4, y + cell // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for c, (_, fa, fb) in enumerate(all_cols):
            face = (fa if in_a else fb)[i]
            sheet[y:y + cell, label_w + c * cell:label_w + (c + 1) * cell] = up(face)
    return sheet


def pick_rows(n: int, rows: int) -> np.ndarray:
    """`rows` indices spread evenly over n held-out faces."""
    return np.unique(np.linspace(0, n - 1, min(rows, n)).round().astype(int))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k != "swaps"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


# ---------------------------------------------------------------- the command

@dataclass
class Comparison:
    """Everything one comparison produced (what main() writes, and what tests inspect)."""

    exit_code: int
    split_a: Split
    split_b: Split
    judges: Judges
    results: dict
    references: dict
    ranking: list
    failed: dict


def compare(args) -> Comparison:
    """Train, judge, report. exit_code is 0, or 1 when some method failed to train or load."""
    methods = parse_methods(args.methods)
    for method in methods:  # before anything is trained: every method must have the preset
        get_preset(method, args.preset)
    if args.steps is not None and args.steps <= 0:
        raise InputError(f"--steps must be > 0, got {args.steps}")
    if args.minutes_per_method is not None and args.minutes_per_method <= 0:
        raise InputError(f"--minutes-per-method must be > 0, got {args.minutes_per_method}")
    if args.rows < 1:
        raise InputError("--rows must be >= 1")
    if args.judge_reference_frames < 2:
        raise InputError(f"--judge-reference-frames must be >= 2, got {args.judge_reference_frames}")
    budget = Budget(args.steps, None if args.steps else (args.minutes_per_method or 10.0))
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out} exists and is not a folder")
    runs = args.runs or os.path.join(out, "runs")
    if not args.reuse:
        busy = [m for m in methods if os.path.isdir(os.path.join(runs, m)) and os.listdir(os.path.join(runs, m))]
        if busy:
            raise InputError(f"run folder(s) {', '.join(os.path.join(runs, m) for m in busy)} already exist; "
                             "pass --reuse to keep them, or choose another --runs")
    split_a, split_b = prepare_splits(args.a, args.b, os.path.join(runs, "data"), args.holdout)
    os.makedirs(out, exist_ok=True)
    log(f"A: {len(split_a.full)} faces ({len(split_a.test_idx)} held out), "
        f"B: {len(split_b.full)} faces ({len(split_b.test_idx)} held out); methods: {', '.join(methods)}")

    failed = train_all(methods, runs, split_a, split_b, budget, args)
    judges = build_judges(split_a, split_b, args.seed)
    face, face_note = prepare_face_judge(split_a, split_b, args)

    results: dict[str, dict] = {}
    ref_size = judged_size(methods, args.preset, args.size, split_a.full.size)
    src_a_ref = resize_faces(split_a.test.faces, ref_size)
    src_b_ref = resize_faces(split_b.test.faces, ref_size)
    references: dict[str, dict] = {}
    references["source copy"] = judge_swaps(judges, src_a_ref, src_a_ref, src_b_ref, src_b_ref)
    if judges.synthetic:
        references["ground truth"] = judge_swaps(judges, src_a_ref, resize_faces(judges.truth_ab, ref_size),
                                                 src_b_ref, resize_faces(judges.truth_ba, ref_size))
    # A "swap" that ignores its source: the target's own held-out faces, in clip order. It
    # marks the chance level of the preservation measures.
    references["target faces"] = judge_swaps(judges, src_a_ref, np.resize(src_b_ref, src_a_ref.shape),
                                             src_b_ref, np.resize(src_a_ref, src_b_ref.shape))
    truth = references.get("ground truth")
    for ref in references.values():
        ref["preservation"] = preservation_of(ref, truth)
        ref["preservation_raw"] = raw_preservation(ref, truth)
    ceilings: dict[str, dict] = {}
    if face is not None:
        log("real-face judge: the reference rows")
        references["source copy"]["face_judge"] = face.rate_source()
        if judges.synthetic:
            references["ground truth"]["face_judge"] = face.rate({"a2b": judges.truth_ab, "b2a": judges.truth_ba})
        references["target faces"]["face_judge"] = face.rate(
            {"a2b": np.resize(split_b.test.faces, split_a.test.faces.shape),
             "b2a": np.resize(split_a.test.faces, split_b.test.faces.shape)})
        references["target faces"]["face_judge_target"] = face.rate_target()
        sides = sorted({output_side(m, args.preset, args.size) for m in methods if m not in failed}, reverse=True)
        for side in sides:
            ceilings[f"ceiling {side} px"] = face.rate_ceiling({"a": split_a.test, "b": split_b.test}, side)
    for k, method in enumerate([m for m in methods if m not in failed], 1):
        log(f"judging {method} ({k}/{len(methods) - len(failed)})")
        try:
            r = evaluate_method(method, os.path.join(runs, method), judges, split_a, split_b, ref_size, face)
        except InputError as exc:
            failed[method] = f"cannot load its run: {exc}"
            log(f"{method}: {failed[method]}")
            continue
        r["preservation"] = preservation_of(r, truth)
        r["preservation_raw"] = raw_preservation(r, truth)
        results[method] = r
        log(f"{method}: P(target) {r['identity']['mean']:.3f}, preservation {r['preservation']:.3f}"
            + (f", SSIM {r['ssim']['mean']:.3f}" if "ssim" in r else "")
            + (f"; face judge transfer {_fmt(r['face_judge']['mean']['transfer'], 2)}, r mouth/eyes/turn "
               + "/".join(_fmt(r['face_judge']['mean'][k], 2) for k in FACE_JUDGE_R) if "face_judge" in r else ""))
    ranking = rank(results)

    # grid.png
    ra, rb = pick_rows(len(split_a.test_idx), args.rows), pick_rows(len(split_b.test_idx), args.rows)
    columns = []
    if judges.synthetic:
        columns.append(("truth", judges.truth_ab[ra], judges.truth_ba[rb]))
    for method, r in results.items():
        columns.append((method, r["swaps"]["a2b"][ra], r["swaps"]["b2a"][rb]))
    write_png(os.path.join(out, "grid.png"),
              make_grid(split_a.test.faces[ra], split_b.test.faces[rb], columns))

    info = {
        "set_a": args.a, "set_b": args.b,
        "set_a_name": os.path.splitext(os.path.basename(args.a))[0],
        "set_b_name": os.path.splitext(os.path.basename(args.b))[0],
        "faces_a": len(split_a.full), "faces_b": len(split_b.full),
        "crop_size": split_a.full.size, "margin": split_a.full.margin, "judged_size": ref_size,
        "aligned": split_a.full.template is not None,
        "held_out_a": int(len(split_a.test_idx)), "held_out_b": int(len(split_b.test_idx)),
        "synthetic": judges.synthetic, "budget": budget.describe(), "preset": args.preset, "size": args.size,
        "batch": args.batch, "methods": methods, "runs": runs, "judge_size": judges.classifier.size,
        "classifier_accuracy": judges.classifier.accuracy, "classifier_seconds": judges.classifier.seconds,
        "face_judge": face is not None, "face_judge_note": face_note,
        "ranked_by": ranking[0]["judge"] if ranking else None,
    }
    if face is not None:
        info.update(face_judge_reference_frames=face.reference_frames, face_judge_prepare_seconds=face.seconds)
    if judges.regressor is not None:
        info.update(pose_names=list(judges.regressor.names), pose_identities=judges.notes["pose_identities"],
                    regressor_seconds=judges.regressor.seconds, regressor_faces=judges.regressor.n_train)
    metrics = {"info": info, "methods": results, "references": references, "ranking": ranking,
               "failed": failed, "face_judge_ceilings": ceilings,
               "held_out": {"a": split_a.test_idx.tolist(), "b": split_b.test_idx.tolist()}}
    write_text(os.path.join(out, "metrics.json"), json.dumps(_jsonable(metrics), indent=2))
    write_report(os.path.join(out, "report.md"), info, results, references, ranking, failed, ceilings)
    for row in ranking:
        print(f"{row['place']}. {row['method']}: score {row['score']:.3f} "
              f"(identity {row['identity']:.3f}, preservation {row['preservation']:.3f}; {row['judge']})")
    print(f"report: {os.path.join(out, 'report.md')}")
    return Comparison(1 if failed else 0, split_a, split_b, judges, results, references, ranking, failed)


def main(argv: list[str] | None = None) -> int:
    """`swapstream compare` entry point (exit 0 ok, 2 bad input, 1 a method failed)."""
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        from swapstream.trainer.tf_quiet import import_tensorflow

        import_tensorflow()  # the judges are Keras networks: quiet, before anything imports it
        return compare(args).exit_code

    return run_cli(body, PROG)
