"""`swapstream train`: train one method on two face sets into a run folder.

    swapstream train --method M --a SET_A.npz --b SET_B.npz --out RUN
                     [--preset P] [--size PX] [--steps N | --minutes T] [--batch B]
                     [--resume] [--distribute none|mirrored|multiworker] [--preview-every N]
                     [--checkpoint-every N] [--keep K] [--lr LR] [--retries N] [--[no-]xla]
                     [--precision auto|float32|mixed_bfloat16] [--seed S] [--set KEY=VALUE ...]
                     [--init PRIOR]

Run folder: config.yaml (resolved config), checkpoints/, previews/, logs/ (TensorBoard),
summary.json. `--steps` is the run's total: `--resume` continues up to it from the last
checkpoint with the same step count and optimizer state. Exit codes: 0 ok, 2 bad input
(missing or mismatched face sets, a size the network cannot take, a diverged loss, a damaged or
foreign checkpoint), 1 anything else. `--retries N` turns a diverged loss into a step back to the
last good checkpoint at half the learning rate (at most N times).
"""
from __future__ import annotations

import argparse
import sys

from swapstream.faces.cliutil import ArgumentParser, run_cli
from swapstream.trainer.methods import METHODS, preset_names, shared_preset_names
from swapstream.trainer.precision import CHOICES
from swapstream.trainer.preset import DEFAULT_PRESET, DISTRIBUTE_CHOICES
from swapstream.trainer.settings import parse_assignments

PROG = "swapstream train"


def preset_help() -> str:
    """The presets, from the registry: those every method has, then each method's own."""
    shared = shared_preset_names()
    own = {m: [p for p in preset_names(m) if p not in shared] for m in METHODS}
    return (f"networks, schedule and augmentation to start from: {' | '.join(shared)} (every method)"
            + "".join(f"; {' | '.join(names)} ({m})" for m, names in own.items() if names)
            + f" (default {DEFAULT_PRESET})")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Train a face-swap method on two face sets.")
    p.add_argument("--method", help=" | ".join(METHODS))
    p.add_argument("--a", help="face set of identity A (.npz from `swapstream extract`)")
    p.add_argument("--b", help="face set of identity B")
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument("--preset", help=preset_help())
    p.add_argument("--size", type=int, help="training image size in pixels (default: the preset's)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="total training steps of the run")
    budget.add_argument("--minutes", type=float, help="train for this many minutes (this session)")
    p.add_argument("--batch", type=int, help="faces of each identity per step (default: preset's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="compile train steps with XLA (default: the preset's; measure first: "
                        "on CPU it can be slower)")
    p.add_argument("--precision", choices=CHOICES,
                   help="float32 | mixed_bfloat16 | auto (default for a new cpu-preset run: "
                        "mixed_bfloat16 where the CPU has bfloat16 instructions, else float32)")
    p.add_argument("--retries", type=int, default=0,
                   help="when the loss diverges, go back to the last good checkpoint with half the "
                        "learning rate and go on, at most N times (default 0: stop)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="change a field of the method's config for a new run (the model section "
                        "of config.yaml), e.g. --set decoder_filters=64,32,16, or of its "
                        "augmentation with augment.KEY, e.g. --set augment.rotation_deg=0; repeatable")
    p.add_argument("--init", metavar="PRIOR",
                   help="start the encoder and both decoders from a prior written by `swapstream pretrain` "
                        "(a new run; its network config must match the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, sampling and augmentation")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    p.add_argument("--distribute", default="none",
                   help=f"{' | '.join(DISTRIBUTE_CHOICES)} (multiworker reads the cluster from TF_CONFIG)")
    p.add_argument("--logical-cpus", type=int, default=0,
                   help="split the CPU into N devices (test mirrored training without GPUs)")
    p.add_argument("--log-every", type=int, help="steps per logged loss window (default: the preset's)")
    p.add_argument("--preview-every", type=int, help="steps between preview grids (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the preset's)")
    p.add_argument("--keep", type=int, help="checkpoints to keep (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `swapstream train`; returns the exit code."""
    return run_cli(lambda: _train(build_parser().parse_args(argv)), PROG)


def _train(args) -> int:
    from swapstream.trainer.tf_quiet import import_tensorflow

    tf = import_tensorflow()  # before anything else imports it

    from swapstream.trainer.session import TrainRequest, train_run

    # Grappler's remapper gives up on the training graphs (Conv+BiasAdd+LeakyReLU whose output
    # the gradient also reads) and logs a C++ error line each time; the graph is the same
    # without it, so switch it off instead of printing a scary line per run.
    tf.config.optimizer.set_experimental_options({"remapping": False})

    request = TrainRequest(
        out=args.out, method=args.method, a=args.a, b=args.b, preset=args.preset, size=args.size,
        steps=args.steps, minutes=args.minutes, batch=args.batch, lr=args.lr, xla=args.xla,
        precision=args.precision, seed=args.seed,
        resume=args.resume, distribute=args.distribute, logical_cpus=args.logical_cpus,
        log_every=args.log_every, preview_every=args.preview_every,
        checkpoint_every=args.checkpoint_every, keep=args.keep, progress=not args.no_progress,
        retries=args.retries, settings=parse_assignments(args.settings), init=args.init)
    summary = train_run(request)
    if summary.get("chief", True):
        print(f"{PROG}: {summary['method']} step {summary['step']} "
              f"({summary['images_per_second']:.1f} images/s); run folder {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
