"""Resolve a training request into a run folder and train it (what `swapstream train` does).

`train_run(TrainRequest(...))` is the library entry point (the CLI and `compare` call it): it
creates or resumes RUN, trains one session and returns the summary dict it wrote to
RUN/summary.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass

import tensorflow as tf

from swapstream.faces.errors import InputError
from swapstream.faces.files import write_bytes, write_json
from swapstream.trainer import checkpoints
from swapstream.trainer.checkpoints import TrainingDiverged
from swapstream.trainer.config import CONFIG_FILE, DataConfig, RunConfig, read_config, template_dict, write_config
from swapstream.trainer.data import load_face_pair, make_dataset, preview_faces
from swapstream.trainer.distribute import chief_in_cluster, is_chief, make_strategy
from swapstream.trainer.loop import SessionPlan, run_with_retries
from swapstream.trainer.methods import build_method, get_preset
from swapstream.trainer.precision import resolve_precision
from swapstream.trainer.preset import DEFAULT_PRESET, DISTRIBUTE_CHOICES
from swapstream.trainer.settings import apply_settings, split_section

SUMMARY_FILE = "summary.json"
PREVIEW_FACES = 6



@dataclass(frozen=True)
class TrainRequest:
    """Everything `swapstream train` accepts (None = keep the preset's or the run's value)."""

    out: str
    method: str | None = None
    a: str | None = None
    b: str | None = None
    preset: str | None = None  # DEFAULT_PRESET for a new run; a resumed run keeps its own
    size: int | None = None
    steps: int | None = None
    minutes: float | None = None
    batch: int | None = None
    lr: float | None = None
    xla: bool | None = None
    # auto|float32|mixed_bfloat16; None: the preset's choice for a new run, the run's own on resume
    precision: str | None = None
    seed: int = 0
    resume: bool = False
    distribute: str = "none"
    logical_cpus: int = 0
    log_every: int | None = None
    preview_every: int | None = None
    checkpoint_every: int | None = None
    keep: int | None = None
    progress: bool = True
    retries: int = 0  # divergences to recover from (last good checkpoint, half the learning rate)
    settings: tuple[tuple[str, str], ...] = ()  # --set KEY=VALUE on the method's config (new runs)
    init: str | None = None  # a prior from `swapstream pretrain` (new runs only)


def scaled_learning_rates(model, scale: float):
    """The model config with every learning rate in it multiplied by `scale`."""
    rates = {f.name: getattr(model, f.name) * scale for f in dataclasses.fields(model)
             if f.name.endswith("learning_rate")}
    return dataclasses.replace(model, **rates)


def _overrides(req: TrainRequest) -> dict:
    values = {"batch_size": req.batch, "log_every": req.log_every, "preview_every": req.preview_every,
              "checkpoint_every": req.checkpoint_every, "keep": req.keep}
    return {k: v for k, v in values.items() if v is not None}


def _model_overrides(model, req: TrainRequest):
    """--lr, --xla and --precision applied to a method config (none changes the weights' shapes)."""
    if req.precision is not None:
        model = dataclasses.replace(model, dtype_policy=resolve_precision(req.precision, model.dtype_policy))
    if req.lr is not None:
        model = dataclasses.replace(model, learning_rate=req.lr)
    if req.xla is not None:
        model = dataclasses.replace(model, jit_compile=req.xla)
    return model


def _new_config(req: TrainRequest, chief: bool) -> RunConfig:
    missing = [f"--{n}" for n in ("method", "a", "b") if getattr(req, n) is None]
    if missing:
        raise InputError(f"a new run needs {', '.join(missing)}")
    # Other workers of a multi-worker run see the folder the chief has just made.
    if chief and os.path.exists(req.out) and (not os.path.isdir(req.out) or os.listdir(req.out)):
        raise InputError(f"{req.out} already exists; use --resume to continue it or another --out")
    name = req.preset or DEFAULT_PRESET
    preset = get_preset(req.method, name)
    augment_settings, model_settings = split_section(req.settings, "augment")
    model = preset.model if req.size is None else dataclasses.replace(preset.model, size=int(req.size))
    model.validate()
    model = apply_settings(model, model_settings)
    augment = apply_settings(preset.augment, augment_settings, "augment")
    if req.precision is None and preset.precision is not None:
        req = dataclasses.replace(req, precision=preset.precision)
    model = _model_overrides(model, req)
    train = dataclasses.replace(preset.train, steps=req.steps, minutes=req.minutes, seed=req.seed,
                                distribute=req.distribute, logical_cpus=req.logical_cpus, **_overrides(req))
    data = DataConfig(a=os.path.abspath(req.a), b=os.path.abspath(req.b), margin=0.0,
                      faces_a=0, faces_b=0, source_size_a=0, source_size_b=0)
    return RunConfig(req.method, name, model, train, data, augment)


def _resumed_config(req: TrainRequest) -> RunConfig:
    cfg = read_config(req.out)
    if req.settings:
        raise InputError("--set applies to a new run: a resumed run keeps the model and augment "
                         "sections of its config.yaml (its checkpoints were trained with them)")
    given = {"--method": (req.method, cfg.method), "--size": (req.size, cfg.model.size),
             "--preset": (req.preset, cfg.preset),
             "--a": (req.a and os.path.abspath(req.a), cfg.data.a),
             "--b": (req.b and os.path.abspath(req.b), cfg.data.b)}
    for flag, (value, stored) in given.items():
        if value is not None and value != stored:
            raise InputError(f"{flag} {value} does not match the run being resumed ({stored}); "
                             "leave it out or start a new run")
    cfg = dataclasses.replace(cfg, model=_model_overrides(cfg.model, req))
    train = dataclasses.replace(cfg.train, distribute=req.distribute, logical_cpus=req.logical_cpus,
                                **_overrides(req))
    if req.steps is not None or req.minutes is not None:
        train = dataclasses.replace(train, steps=req.steps, minutes=req.minutes)
    return dataclasses.replace(cfg, train=train)


def _earlier_seconds(req: TrainRequest) -> float:
    """Training seconds of the sessions before this one (from the summary a resumed run left)."""
    path = os.path.join(req.out, SUMMARY_FILE)
    if not req.resume or not os.path.isfile(path):
        return 0.0
    try:
        with open(path, encoding="utf-8") as fh:
            earlier = json.load(fh)
        return float(earlier.get("training_seconds", earlier.get("seconds", 0.0)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0  # an unreadable old summary only loses the running total


def train_run(req: TrainRequest, strategy: tf.distribute.Strategy | None = None) -> dict:
    """Create or resume the run folder `req.out`, train one session, write and return the summary.

    `strategy` defaults to the one `req.distribute` names. A process that trains several runs
    with a multi-device strategy should make it once (trainer.distribute.make_strategy) and pass
    it to each: TensorFlow's collective ops do not tell apart two MirroredStrategy instances.
    """
    if req.distribute not in DISTRIBUTE_CHOICES:
        raise InputError(f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, got {req.distribute!r}")
    if req.retries < 0:
        raise InputError(f"--retries must be 0 or more, got {req.retries}")
    if req.retries and req.distribute == "multiworker":
        raise InputError("--retries does not work with --distribute multiworker (the workers would not agree on it)")
    if req.distribute == "multiworker" and req.minutes is not None:
        raise InputError("--distribute multiworker needs --steps (workers must stop at the same step)")
    # What can be checked without TensorFlow's runtime comes before the strategy, so bad input is
    # reported before TensorFlow starts its devices (and logs about them). Only the chief writes
    # the run folder.
    chief = is_chief(strategy) if strategy is not None else chief_in_cluster(req.distribute)
    cfg = _resumed_config(req) if req.resume else _new_config(req, chief)
    cfg.train.validate()
    prior = None
    if req.init is not None:
        if req.resume:
            raise InputError("--init starts a new run; a resumed run continues from its checkpoints")
        from swapstream.trainer.prior import read_prior

        prior = read_prior(req.init)
        prior.check_fits(cfg.method, cfg.model)
    input_size, output_size = cfg.io_sizes
    pair = load_face_pair(cfg.data.a, cfg.data.b, output_size)
    if prior is not None:
        prior.check_framing(template_dict(pair.template))
    if not req.resume:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, margin=pair.margin, faces_a=len(pair.faces_a), faces_b=len(pair.faces_b),
            source_size_a=pair.source_size_a, source_size_b=pair.source_size_b,
            align_template=template_dict(pair.template)))
    elif abs(pair.margin - cfg.data.margin) > 1e-6 or template_dict(pair.template) != cfg.data.align_template:
        raise InputError("the face sets' framing (crop margin or alignment template) differs from the run's; "
                         "they were re-extracted differently")

    # Before any TensorFlow op: splitting the CPU must happen before TensorFlow starts up.
    if strategy is None:
        strategy = make_strategy(req.distribute, req.logical_cpus)
        if is_chief(strategy) != chief:
            raise RuntimeError(f"TF_CONFIG names this process chief={chief}, the strategy says otherwise")
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise InputError(f"--batch {cfg.train.batch_size} must be a multiple of the {replicas} replicas")
    with strategy.scope():
        method = build_method(cfg.method, cfg.model, seed=cfg.train.seed, template=pair.template)
        method.compile(method.default_optimizers(), jit_compile=cfg.model.jit_compile)
        if prior is not None:
            prior.apply(method)
        if req.resume:
            if checkpoints.latest_checkpoint(req.out) is None:
                print(f"{req.out} has no checkpoint yet: starting at step 0", file=sys.stderr)
            else:  # read-only: a damaged or foreign checkpoint stops us before anything is written
                checkpoints.restore_checkpoint(method, req.out, cfg.dropped_hint())

    config_path = os.path.join(req.out, CONFIG_FILE)
    previous_config = None
    if chief:
        if req.resume:
            with open(config_path, "rb") as fh:
                previous_config = fh.read()
        os.makedirs(req.out, exist_ok=True)
        write_config(req.out, cfg)

    def dataset_for(step: int, attempt: int) -> tf.data.Dataset:
        # Seeded by the start step (a resumed run does not replay its batches) and the attempt
        # (a retry after a divergence does not replay the batches that led to it).
        return make_dataset(pair.faces_a, pair.faces_b, cfg.train.batch_size, cfg.augment,
                            seed=cfg.train.seed * 1_000_003 + step + 7_919 * attempt, input_size=input_size)

    plan = SessionPlan(
        run_dir=req.out, target_steps=cfg.train.steps,
        minutes=cfg.train.minutes, log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every, preview_every=cfg.train.preview_every,
        keep=cfg.train.keep, images_per_step=2 * cfg.train.batch_size, chief=chief,
        progress=req.progress)
    try:
        result = run_with_retries(method, dataset_for, plan, preview_faces(pair.faces_a, PREVIEW_FACES),
                                  preview_faces(pair.faces_b, PREVIEW_FACES), retries=req.retries)
    except TrainingDiverged:
        if previous_config is not None:  # a resumed session leaves the run as it found it
            write_bytes(config_path, previous_config)
        raise
    if result.retries and chief:  # a resumed run goes on at the learning rate that worked
        scale = result.retries[-1]["learning_rate_scale"]
        cfg = dataclasses.replace(cfg, model=scaled_learning_rates(cfg.model, scale))
        write_config(req.out, cfg)
    summary = {
        "method": cfg.method, "preset": cfg.preset, "size": input_size, "output_size": output_size,
        "aligned": pair.template is not None,
        "training_seconds": round(_earlier_seconds(req) + result.seconds, 2),
        "batch_size": cfg.train.batch_size, "step": result.end_step,
        "start_step": result.start_step, "steps_this_session": result.end_step - result.start_step,
        "seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 2),
        "seconds_per_step": round(result.seconds_per_step, 4), "stop_reason": result.stop_reason,
        "final_losses": result.final_losses, "checkpoint_step": result.checkpoint_step,
        "parameters": method.parameter_counts(), "distribute": cfg.train.distribute,
        "replicas": replicas, "chief": chief, "retries": result.retries,
        "init": prior.describe() if prior is not None else None,
    }
    if chief:
        write_json(os.path.join(req.out, SUMMARY_FILE), summary)
    return summary
