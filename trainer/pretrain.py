"""`swapstream pretrain`: train a shared encoder and one generic decoder on many identities.

    swapstream pretrain --faces SET.npz [SET.npz ...] --out PRIOR.npz [--method ae] [--preset P]
                        [--size PX] [--steps N | --minutes T] [--batch B] [--lr LR] [--seed S]
                        [--precision auto|float32|mixed_bfloat16] [--set KEY=VALUE ...]
                        [--work DIR] [--resume] [--retries N]

Every face set's faces are pooled and each face is reconstructed through the one decoder (the
network then knows faces in general: DeepFaceLab's pretrain mode). PRIOR (trainer/prior.py)
holds the encoder's and the decoder's weights in float16 and the config they fit;
`swapstream train --init PRIOR` starts a pair from it (encoder and both decoders), and refuses a
prior whose networks do not match the run's. `--batch` is faces per half-step as in `train`: a
step sees 2*B faces and costs what a pair's step costs. The working folder (default PRIOR's name
with .run instead of .npz) holds checkpoints, previews (rows are reconstructions) and
pretrain.json; `--resume` continues it (`--steps` is the total, `--minutes` this session's).
Exit codes: 0 ok, 2 bad input, 1 anything else.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from swapstream.faces.align import AlignTemplate
from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.faces.errors import InputError
from swapstream.faces.faceset import load_faceset, resize_faces
from swapstream.faces.files import write_json
from swapstream.trainer.config import template_dict
from swapstream.trainer.methods import config_class, get_preset
from swapstream.trainer.methods.configs import io_sizes
from swapstream.trainer.precision import CHOICES, resolve_precision
from swapstream.trainer.preset import DEFAULT_PRESET, AugmentConfig, TrainConfig
from swapstream.trainer.prior import PRETRAINABLE, plain_config, write_prior
from swapstream.trainer.settings import apply_settings, parse_assignments, split_section

PROG = "swapstream pretrain"
SPEC_FILE = "pretrain.json"
PREVIEW_FACES = 6


@dataclass(frozen=True)
class PretrainRequest:
    """Everything `swapstream pretrain` accepts (None = the preset's value, or the run's on resume)."""

    out: str
    faces: tuple[str, ...] = ()
    method: str = "ae"
    preset: str | None = None
    size: int | None = None
    steps: int | None = None
    minutes: float | None = None
    batch: int | None = None
    lr: float | None = None
    precision: str | None = None
    seed: int = 0
    settings: tuple[tuple[str, str], ...] = ()
    work: str | None = None
    resume: bool = False
    retries: int = 0
    checkpoint_every: int | None = None
    preview_every: int | None = None
    log_every: int | None = None
    progress: bool = True

    def schedule(self) -> dict:
        """The TrainConfig fields this request sets (batch and bookkeeping intervals)."""
        values = {"batch_size": self.batch, "checkpoint_every": self.checkpoint_every,
                  "preview_every": self.preview_every, "log_every": self.log_every}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class PretrainSpec:
    """What a pretraining run is (pretrain.json in its working folder; a resumed run keeps it)."""

    method: str
    preset: str
    model: object
    train: TrainConfig
    augment: AugmentConfig
    faces: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"method": self.method, "preset": self.preset, "model": plain_config(self.model),
                "train": dataclasses.asdict(self.train), "augment": dataclasses.asdict(self.augment),
                "faces": list(self.faces)}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> PretrainSpec:
        try:
            tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in d["model"].items()}
            model = config_class(d["method"])(**tuples)
            model.validate()
            return cls(d["method"], d["preset"], model, TrainConfig(**d["train"]),
                       AugmentConfig(**d["augment"]), tuple(d["faces"]))
        except (KeyError, TypeError) as exc:
            raise InputError(f"{where} is damaged ({type(exc).__name__}: {exc})") from exc


def default_work_dir(out: str) -> str:
    """PRIOR.npz -> PRIOR.run (beside it)."""
    stem = out[:-4] if out.endswith(".npz") else out
    return stem + ".run"


def new_spec(req: PretrainRequest) -> PretrainSpec:
    """The spec of a new pretraining run from the request and the method's preset."""
    if req.method not in PRETRAINABLE:
        raise InputError(f"pretrain supports --method {', '.join(PRETRAINABLE)} (a shared encoder and one "
                         f"decoder per identity), not {req.method!r}")
    if not req.faces:
        raise InputError("give the face sets to pretrain on with --faces SET.npz ...")
    name = req.preset or DEFAULT_PRESET
    preset = get_preset(req.method, name)
    augment_settings, model_settings = split_section(req.settings, "augment")
    model = preset.model if req.size is None else dataclasses.replace(preset.model, size=int(req.size))
    model.validate()
    model = apply_settings(model, model_settings)
    augment = apply_settings(preset.augment, augment_settings, "augment")
    precision = req.precision if req.precision is not None else preset.precision
    if precision is not None:
        model = dataclasses.replace(model, dtype_policy=resolve_precision(precision, model.dtype_policy))
    if req.lr is not None:
        model = dataclasses.replace(model, learning_rate=req.lr)
    train = dataclasses.replace(preset.train, steps=req.steps, minutes=req.minutes, seed=req.seed,
                                **req.schedule())
    return PretrainSpec(req.method, name, model, train, augment, tuple(os.path.abspath(p) for p in req.faces))


def resumed_spec(req: PretrainRequest, work: str) -> PretrainSpec:
    """The stored spec of the run in `work`, with this session's budget and learning rate."""
    path = os.path.join(work, SPEC_FILE)
    if not os.path.isfile(path):
        raise InputError(f"{work} is not a pretraining run ({SPEC_FILE} is missing); leave out --resume")
    if req.settings or req.size is not None or req.preset is not None:
        raise InputError("--resume keeps the run's networks: leave out --preset, --size and --set")
    with open(path, encoding="utf-8") as fh:
        try:
            spec = PretrainSpec.from_dict(json.load(fh), path)
        except ValueError as exc:
            raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if req.faces and tuple(os.path.abspath(p) for p in req.faces) != spec.faces:
        raise InputError("--faces differ from the run being resumed; leave them out or start a new run")
    model = spec.model if req.lr is None else dataclasses.replace(spec.model, learning_rate=req.lr)
    train = spec.train
    if req.steps is not None or req.minutes is not None:
        train = dataclasses.replace(train, steps=req.steps, minutes=req.minutes)
    train = dataclasses.replace(train, **req.schedule())
    return dataclasses.replace(spec, model=model, train=train)


@dataclass(frozen=True)
class FacePool:
    """Faces of every set, pooled, at the training target's side; where they came from."""

    faces: np.ndarray  # uint8 (N, S, S, 3) BGR
    per_set: tuple[int, ...]
    template: AlignTemplate | None  # the sets' common alignment template (None: Haar squares)
    identities: tuple[int, ...]  # synthetic identity seeds found in the sets (empty for real faces)
    sources: tuple[str, ...]  # source video file names


def load_pool(paths: tuple[str, ...], size: int) -> FacePool:
    """Load the face sets, each resized to `size`, and pool them; InputError for a bad set, sets
    framed differently (the checks of a pair: trainer.data.check_framing), or one given twice."""
    from swapstream.trainer.data import check_framing

    faces, counts, identities, sources = [], [], set(), set()
    first = None
    seen: dict[bytes, str] = {}
    for path in paths:
        fs = load_faceset(path)
        key = hashlib.sha256(fs.faces.tobytes()).digest()
        if key in seen:
            raise InputError(f"face sets {seen[key]} and {path} hold the same faces; give each once")
        seen[key] = path
        if first is None:
            first = (fs, path)
        else:
            check_framing(first[0], fs, first[1], path)
        faces.append(resize_faces(fs.faces, size))
        counts.append(len(fs))
        if "identity" in fs.extra:
            identities.update(int(i) for i in np.unique(fs.extra["identity"]))
        sources.update(os.path.basename(str(s)) for s in np.unique(fs.source))
    return FacePool(np.concatenate(faces), tuple(counts), first[0].template, tuple(sorted(identities)),
                    tuple(sorted(sources)))


def pretrain_run(req: PretrainRequest) -> dict:
    """Train (or resume) a prior and write PRIOR; returns the summary written to pretrain.json."""
    if not req.out:
        raise InputError("give --out PRIOR.npz")
    if os.path.isdir(req.out):
        raise InputError(f"--out {req.out} is a folder; give a file name (PRIOR.npz)")
    if req.retries < 0:
        raise InputError(f"--retries must be 0 or more, got {req.retries}")
    work = req.work or default_work_dir(req.out)
    if req.resume:
        spec = resumed_spec(req, work)
    else:
        if os.path.exists(work) and (not os.path.isdir(work) or os.listdir(work)):
            raise InputError(f"working folder {work} already exists; use --resume to continue it or another --work")
        spec = new_spec(req)
    spec.train.validate()
    spec.augment.validate()

    from swapstream.trainer.tf_quiet import import_tensorflow

    tf = import_tensorflow()  # quietly, before the data module imports it
    tf.config.optimizer.set_experimental_options({"remapping": False})  # as `train` (see trainer/cli.py)
    input_size, output_size = io_sizes(spec.model)
    pool = load_pool(spec.faces, output_size)
    if len(pool.faces) < 2 * PREVIEW_FACES:
        raise InputError(f"the face sets hold {len(pool.faces)} faces; pretraining needs at least {2 * PREVIEW_FACES}")

    from swapstream.trainer import checkpoints
    from swapstream.trainer.data import make_dataset, preview_faces
    from swapstream.trainer.loop import SessionPlan, run_with_retries
    from swapstream.trainer.prior_model import PriorTrainer

    trainer = PriorTrainer(spec.model, spec.method, seed=spec.train.seed, template=pool.template)
    trainer.compile(trainer.default_optimizers(), jit_compile=spec.model.jit_compile)
    if req.resume and checkpoints.latest_checkpoint(work) is not None:
        checkpoints.restore_checkpoint(trainer, work)
    os.makedirs(work, exist_ok=True)
    write_json(os.path.join(work, SPEC_FILE), spec.to_dict())

    def dataset_for(step: int, attempt: int):
        return make_dataset(pool.faces, pool.faces, spec.train.batch_size, spec.augment,
                            seed=spec.train.seed * 1_000_003 + step + 7_919 * attempt, input_size=input_size)

    previews = preview_faces(pool.faces, 2 * PREVIEW_FACES)
    plan = SessionPlan(run_dir=work, target_steps=spec.train.steps, minutes=spec.train.minutes,
                       log_every=spec.train.log_every, checkpoint_every=spec.train.checkpoint_every,
                       preview_every=spec.train.preview_every, keep=spec.train.keep,
                       images_per_step=2 * spec.train.batch_size, progress=req.progress)
    result = run_with_retries(trainer, dataset_for, plan, previews[::2], previews[1::2], retries=req.retries)

    earlier = _earlier_seconds(work) if req.resume else 0.0
    info = {"steps": result.end_step, "seconds": round(earlier + result.seconds, 1),
            "images_per_second": round(result.images_per_second, 2), "batch_size": spec.train.batch_size,
            "faces": int(len(pool.faces)), "face_sets": [os.path.basename(p) for p in spec.faces],
            "faces_per_set": list(pool.per_set), "identities": list(pool.identities),
            "align_template": template_dict(pool.template), "input_size": input_size, "output_size": output_size,
            "sources": list(pool.sources), "augment": dataclasses.asdict(spec.augment),
            "final_losses": result.final_losses, "seed": spec.train.seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    networks = {"encoder": trainer.encoder.get_weights(), "decoder": trainer.decoder.get_weights()}
    write_prior(req.out, spec.method, spec.preset, spec.model, networks, info)
    summary = {**info, "prior": os.path.abspath(req.out), "bytes": os.path.getsize(req.out),
               "method": spec.method, "preset": spec.preset, "stop_reason": result.stop_reason,
               "parameters": trainer.parameter_counts()}
    write_json(os.path.join(work, "summary.json"), summary)
    return summary


def _earlier_seconds(work: str) -> float:
    try:
        with open(os.path.join(work, "summary.json"), encoding="utf-8") as fh:
            return float(json.load(fh).get("seconds", 0.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--faces", nargs="+", default=[], metavar="SET", help="face sets (.npz from `swapstream extract`)")
    p.add_argument("--out", required=True, help="prior file to write (PRIOR.npz)")
    p.add_argument("--method", default="ae", help=" | ".join(PRETRAINABLE) + " (default ae)")
    p.add_argument("--preset", help=f"the networks to pretrain: those of this preset of the method (default "
                                    f"{DEFAULT_PRESET}); a pair run starts from the prior with the same preset")
    p.add_argument("--size", type=int, help="image size in pixels (default: the preset's)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="total steps of the pretraining run")
    budget.add_argument("--minutes", type=float, help="train for this many minutes (this session)")
    p.add_argument("--batch", type=int, help="faces per half-step (a step sees 2*B; default: the preset's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--precision", choices=CHOICES, help="as for `swapstream train` (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="change a field of the method's config (or augment.KEY), as for `swapstream train`")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, sampling and augmentation")
    p.add_argument("--work", help="working folder: checkpoints, previews, pretrain.json (default: PRIOR.run)")
    p.add_argument("--resume", action="store_true", help="continue the working folder's run from its checkpoint")
    p.add_argument("--retries", type=int, default=0,
                   help="on a diverged loss go back to the last checkpoint at half the learning rate, at most N times")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the preset's)")
    p.add_argument("--preview-every", type=int, help="steps between preview grids (default: the preset's)")
    p.add_argument("--log-every", type=int, help="steps per logged loss window (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swapstream pretrain`; returns the exit code."""
    return run_cli(lambda: _pretrain(build_parser().parse_args(argv)), PROG)


def _pretrain(args: argparse.Namespace) -> int:
    req = PretrainRequest(out=args.out, faces=tuple(args.faces), method=args.method, preset=args.preset,
                          size=args.size, steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr,
                          precision=args.precision, seed=args.seed, settings=parse_assignments(args.settings),
                          work=args.work, resume=args.resume, retries=args.retries,
                          checkpoint_every=args.checkpoint_every, preview_every=args.preview_every,
                          log_every=args.log_every, progress=not args.no_progress)
    summary = pretrain_run(req)
    print(f"{PROG}: {summary['method']} ({summary['preset']}) step {summary['steps']} on {summary['faces']} faces "
          f"of {len(summary['face_sets'])} sets ({summary['images_per_second']:.1f} images/s); prior {args.out} "
          f"({summary['bytes'] / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
