"""One training session: `fit()` with the callbacks that run the run folder.

Keras "epochs" are used as logging windows of `log_every` steps (the loss trackers reset at each
window, so logged losses are window means). The global step is the method's optimizer iteration
count, restored from checkpoints, so checkpoints, previews and TensorBoard steps continue across
resumed sessions.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tqdm import tqdm

from swapstream.faces.files import write_png
from swapstream.trainer import checkpoints, preview
from swapstream.trainer.checkpoints import TrainingDiverged

PREVIEW_DIR = "previews"
LOG_DIR = "logs"


@dataclass
class SessionResult:
    """What one session did (feeds summary.json)."""

    start_step: int
    end_step: int
    seconds: float
    steady_seconds: float  # wall time of the steps after the first (graph tracing excluded)
    steady_steps: int
    images_per_step: int
    stop_reason: str
    final_losses: dict = field(default_factory=dict)
    checkpoint_step: int | None = None
    retries: list = field(default_factory=list)  # one dict per divergence recovered from

    @property
    def images_per_second(self) -> float:
        return self.steady_steps * self.images_per_step / self.steady_seconds if self.steady_seconds else 0.0

    @property
    def seconds_per_step(self) -> float:
        return self.steady_seconds / self.steady_steps if self.steady_steps else 0.0


def scalar(value) -> float:
    """A log value as float (multi-worker runs give length-1 arrays, see SwapMethod.metric_logs)."""
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


class StepBudget(keras.callbacks.Callback):
    """Stop at a total step count or a wall-clock deadline; time the steps."""

    def __init__(self, target_steps: int | None, deadline: float | None) -> None:
        super().__init__()
        self.target_steps, self.deadline = target_steps, deadline
        self.reason = "steps"
        self.first_step_end: float | None = None
        self.last_step_end: float | None = None
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.steps += 1
        if self.first_step_end is None:
            self.first_step_end = now
        self.last_step_end = now
        if self.target_steps is not None and self.model.step >= self.target_steps:
            self.reason, self.model.stop_training = "steps", True
        elif self.deadline is not None and time.time() >= self.deadline:
            self.reason, self.model.stop_training = "minutes", True


class DivergenceGuard(keras.callbacks.Callback):
    """Stop as soon as a logged loss is NaN or infinite, or the reconstruction loss collapses
    (its running mean jumps to JUMP times the best window mean of this session).

    A collapse is how these networks fail without a NaN: one oversized step saturates the
    output layer, the loss jumps several-fold and never comes back. While the loss is above
    SUSPECT times its best, no checkpoint is written, so the newest checkpoint is from before
    the jump.
    """

    JUMP = 4.0
    SUSPECT = 2.0

    def __init__(self, metric: str = "l1", warmup_windows: int = 2) -> None:
        super().__init__()
        self.metric, self.warmup = metric, warmup_windows
        self.diverged_at: int | None = None
        self.bad: dict = {}
        self.best: float | None = None
        self.current: float | None = None
        self.windows = 0

    @property
    def suspicious(self) -> bool:
        """The loss is well above its best: not a state worth checkpointing."""
        return (self.best is not None and self.current is not None
                and self.current > self.SUSPECT * self.best)

    def on_train_batch_end(self, batch, logs=None):
        if self.diverged_at is not None:
            return
        values = {k: scalar(v) for k, v in (logs or {}).items()}  # one device-to-host read each
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            self.diverged_at, self.bad = self.model.step, bad
            self.model.stop_training = True
            return
        if self.metric in values:
            self.current = values[self.metric]
            if self.best is not None and self.current > self.JUMP * self.best:
                self.diverged_at = self.model.step
                self.bad = {self.metric: f"{self.current:.4g} (jumped from {self.best:.4g})"}
                self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # An "epoch" is one log window (log_every steps): its mean is a steady figure.
        self.windows += 1
        value = (logs or {}).get(self.metric)
        if value is not None and self.windows > self.warmup and not self.suspicious:
            value = scalar(value)
            self.best = value if self.best is None else min(self.best, value)


class Checkpointer(keras.callbacks.Callback):
    """Checkpoint every N steps and at the end of the session (unless training diverged)."""

    def __init__(self, run_dir, every, keep, guard: DivergenceGuard, chief) -> None:
        super().__init__()
        self.run_dir, self.every, self.keep = run_dir, every, keep
        self.guard, self.chief = guard, chief
        self.last_saved: int | None = None

    def save(self) -> None:
        meta = checkpoints.save_checkpoint(self.model, self.run_dir, self.keep, self.chief)
        self.last_saved = self.model.step if meta is None else meta["step"]

    def healthy(self) -> bool:
        return self.guard.diverged_at is None and not self.guard.suspicious

    def on_train_batch_end(self, batch, logs=None):
        if self.healthy() and self.model.step % self.every == 0:
            self.save()

    def on_train_end(self, logs=None):
        if self.healthy() and self.last_saved != self.model.step:
            self.save()


class Previewer(keras.callbacks.Callback):
    """Write RUN/previews/step-XXXXXXXX.png and preview.png every N steps and at the end."""

    def __init__(self, run_dir, faces_a, faces_b, every, guard: DivergenceGuard) -> None:
        super().__init__()
        self.folder = os.path.join(run_dir, PREVIEW_DIR)
        self.faces_a, self.faces_b, self.every, self.guard = faces_a, faces_b, every, guard
        self.last: int | None = None

    def write(self) -> None:
        scale = max(1, 128 // self.model.output_size)  # small faces are shown enlarged
        grid = preview.preview_grid(self.model, self.faces_a, self.faces_b, scale=scale)
        step = self.model.step
        write_png(os.path.join(self.folder, f"step-{step:08d}.png"), grid)
        write_png(os.path.join(self.folder, "preview.png"), grid)
        self.last = step

    def on_train_batch_end(self, batch, logs=None):
        if self.guard.diverged_at is None and self.model.step % self.every == 0:
            self.write()

    def on_train_end(self, logs=None):
        if self.guard.diverged_at is None and self.last != self.model.step:
            self.write()


# Scalar summaries through core TF's tf.summary.write: tf.summary.scalar lives in the
# `tensorboard` package, which a training box need not have (TensorBoard itself reads these).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def write_scalar(tag: str, value: float) -> None:
    """One TensorBoard scalar at the default writer's step."""
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars (window-mean losses, images/s) at the global step; keeps the last logs."""

    def __init__(self, log_dir: str | None, images_per_step: int) -> None:
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        self.images_per_step = images_per_step
        self.window_start = time.perf_counter()
        self.window_steps = 0
        self.last_logs: dict = {}

    def on_train_batch_end(self, batch, logs=None):
        self.window_steps += 1

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        logs = {k: scalar(v) for k, v in (logs or {}).items()}
        self.last_logs = dict(logs)
        if self.window_steps:
            logs["images_per_second"] = self.window_steps * self.images_per_step / (now - self.window_start)
        if self.writer is not None:
            with self.writer.as_default(step=self.model.step):
                for k, v in logs.items():
                    if math.isfinite(v):
                        write_scalar(k, v)
            self.writer.flush()
        self.window_start, self.window_steps = now, 0

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


class Progress(keras.callbacks.Callback):
    """A tqdm bar over the global step with the current window's mean losses."""

    def __init__(self, start_step: int, target_steps: int | None, enabled: bool) -> None:
        super().__init__()
        self.bar = tqdm(initial=start_step, total=target_steps, unit="step", disable=not enabled,
                        dynamic_ncols=True, mininterval=1.0)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if batch % 10 == 0 and logs:
            self.bar.set_postfix({k: f"{scalar(v):.4f}" for k, v in logs.items()}, refresh=False)

    def on_train_end(self, logs=None):
        self.bar.close()


@dataclass(frozen=True)
class SessionPlan:
    """What a session should do (from the run config and the command line)."""

    run_dir: str
    target_steps: int | None
    minutes: float | None
    log_every: int
    checkpoint_every: int
    preview_every: int
    keep: int
    images_per_step: int
    chief: bool = True
    progress: bool = True


def run_session(method, dataset: tf.data.Dataset, plan: SessionPlan, preview_a: np.ndarray,
                preview_b: np.ndarray, extra_callbacks: list | None = None) -> SessionResult:
    """Train `method` (compiled, optionally restored) until the step target or the deadline.

    Raises TrainingDiverged after writing nothing for the bad step if a loss goes NaN/inf or
    collapses (DivergenceGuard); the last good checkpoint stays the newest one.
    """
    start_step = method.step
    started = time.time()
    deadline = started + plan.minutes * 60 if plan.minutes else None
    budget = StepBudget(plan.target_steps, deadline)
    guard = DivergenceGuard(method.progress_metric)
    ckpt = Checkpointer(plan.run_dir, plan.checkpoint_every, plan.keep, guard, plan.chief)
    callbacks = [guard, budget, ckpt]
    if plan.chief:
        callbacks.append(Previewer(plan.run_dir, preview_a, preview_b, plan.preview_every, guard))
    scalars = ScalarLogger(os.path.join(plan.run_dir, LOG_DIR) if plan.chief else None,
                           plan.images_per_step)
    callbacks += [scalars, Progress(start_step, plan.target_steps, plan.progress and plan.chief)]
    callbacks += extra_callbacks or []
    if plan.target_steps is not None and start_step >= plan.target_steps:
        return SessionResult(start_step, start_step, 0.0, 0.0, 0, plan.images_per_step, "steps")
    first_window = start_step // plan.log_every
    try:
        method.fit(dataset, initial_epoch=first_window, epochs=first_window + 10**9,
                   steps_per_epoch=plan.log_every, callbacks=callbacks, verbose=0, shuffle=False)
    except KeyboardInterrupt:
        # Ctrl-C lands between steps: keep what was learnt since the last checkpoint.
        if plan.chief and ckpt.healthy() and ckpt.last_saved != method.step:
            checkpoints.save_checkpoint(method, plan.run_dir, plan.keep)
            print(f"interrupted: checkpoint written at step {method.step}", file=sys.stderr)
        raise
    if guard.diverged_at is not None:
        losses = ", ".join(f"{k}={v}" for k, v in guard.bad.items())
        last = checkpoints.latest_checkpoint(plan.run_dir) if plan.chief else None
        kept = f"the last good checkpoint (step {last['step']}) is kept" if last else "no checkpoint was written"
        raise TrainingDiverged(f"training diverged at step {guard.diverged_at} ({losses}); stopped; "
                               f"{kept}; try a lower learning rate (--lr)")
    steady_steps = max(budget.steps - 1, 0)
    steady = (budget.last_step_end - budget.first_step_end) if steady_steps else 0.0
    return SessionResult(start_step, method.step, time.time() - started, steady, steady_steps,
                         plan.images_per_step, budget.reason, scalars.last_logs, ckpt.last_saved)


def run_with_retries(method, dataset_for, plan: SessionPlan, preview_a: np.ndarray, preview_b: np.ndarray,
                     retries: int = 0, extra_callbacks: list | None = None) -> SessionResult:
    """`run_session`, and after a divergence go back to the last good checkpoint with half the
    learning rates and go on, at most `retries` times, within the same step or time budget.

    `dataset_for(step, attempt)` makes the input pipeline for a start step; a retry draws other
    batches than the attempt that diverged. The result's seconds cover all attempts and its
    `retries` lists them. With no retries left (or no checkpoint to go back to) the
    TrainingDiverged of the last attempt is raised.
    """
    started, start_step = time.time(), method.step
    done: list[dict] = []
    scale = 1.0
    while True:
        remaining = None
        if plan.minutes is not None:
            remaining = plan.minutes - (time.time() - started) / 60
        try:
            if remaining is not None and remaining <= 0:  # the budget ran out in a failed attempt
                result = SessionResult(method.step, method.step, 0.0, 0.0, 0, plan.images_per_step,
                                       "minutes", checkpoint_step=method.step)
            else:
                result = run_session(method, dataset_for(method.step, len(done)),
                                     dataclasses.replace(plan, minutes=remaining), preview_a, preview_b,
                                     extra_callbacks)
            return dataclasses.replace(result, start_step=start_step, seconds=time.time() - started, retries=done)
        except TrainingDiverged as exc:
            if len(done) >= retries or not plan.chief or checkpoints.latest_checkpoint(plan.run_dir) is None:
                raise
            diverged_at = method.step
            meta = checkpoints.restore_checkpoint(method, plan.run_dir)
            scale /= 2
            for name, rate in method.learning_rates().items():
                method.named_optimizer(name).learning_rate = rate * scale
            done.append({"diverged_at": diverged_at, "restored_step": meta["step"], "learning_rate_scale": scale})
            print(f"{exc}\nretry {len(done)} of {retries}: back to step {meta['step']} with {scale:g} times "
                  "the learning rate", file=sys.stderr, flush=True)
