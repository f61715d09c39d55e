"""Reading finished (or running) training runs: the API the exporter and `compare` use.

    load_run(run_dir) -> SwapMethod with the latest checkpoint's weights (and optimizer state);
                         method.config is the model config, method.run_config the whole RunConfig
                         (crop margin in run_config.data.margin, alignment template in
                         run_config.template, input and output side in run_config.io_sizes).
    read_run_config(run_dir) -> RunConfig without building any network.
Both raise faces.errors.InputError with a clear message for a missing or half-written run, a
truncated or damaged checkpoint, or a checkpoint that does not match the run's config. Nothing in
the run folder is ever modified here.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from swapstream.faces.errors import InputError
from swapstream.trainer import checkpoints
from swapstream.trainer.config import RunConfig, read_config
from swapstream.trainer.methods import build_method

if TYPE_CHECKING:
    from swapstream.trainer.methods.base import SwapMethod


def read_run_config(run_dir: str) -> RunConfig:
    """The run's resolved config (InputError if the folder is not a run)."""
    if not os.path.isdir(run_dir):
        raise InputError(f"run folder {run_dir} does not exist")
    return read_config(run_dir)


def load_run(run_dir: str) -> SwapMethod:
    """Build the run's method and load its latest checkpoint (see module docstring)."""
    cfg = read_run_config(run_dir)
    if checkpoints.latest_checkpoint(run_dir) is None:
        raise InputError(f"run {run_dir} has no checkpoint yet (half-written: training stopped "
                         "before its first checkpoint)")
    method = build_method(cfg.method, cfg.model, seed=cfg.train.seed, template=cfg.template)
    method.compile(method.default_optimizers())
    checkpoints.restore_checkpoint(method, run_dir, cfg.dropped_hint())
    method.run_config = cfg
    return method
