"""tf.distribute strategies for `--distribute none|mirrored|multiworker`.

mirrored:    MirroredStrategy over all GPUs, or over the logical CPU devices when there is no GPU
             (`--logical-cpus N` splits the host CPU into N devices, which is how the tests and a
             GPU-less box exercise the same code path).
multiworker: MultiWorkerMirroredStrategy; the cluster comes from the TF_CONFIG environment
             variable (one process per worker; worker 0 is the chief and writes the run folder).
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from swapstream.faces.errors import InputError


def split_cpu(logical_cpus: int) -> None:
    """Expose the host CPU as `logical_cpus` devices; must run before TensorFlow starts up."""
    if logical_cpus <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpus)])
    except RuntimeError as exc:  # already initialised (e.g. called twice in one process)
        if len(tf.config.list_logical_devices("CPU")) != logical_cpus:
            raise RuntimeError(f"cannot split the CPU after TensorFlow started: {exc}") from exc


def _tf_config() -> dict:
    """TF_CONFIG as a dict (InputError when it is missing or not a JSON object)."""
    if "TF_CONFIG" not in os.environ:
        raise InputError("--distribute multiworker needs the TF_CONFIG environment variable "
                         "(cluster and this worker's task)")
    try:
        config = json.loads(os.environ["TF_CONFIG"])
    except ValueError as exc:
        raise InputError(f"TF_CONFIG is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("task", {}), dict):
        raise InputError("TF_CONFIG must be a JSON object with a \"task\" object")
    return config


def chief_in_cluster(kind: str) -> bool:
    """Whether this process writes the run folder, from TF_CONFIG alone (so before any strategy
    exists): the `chief` task if the cluster has one, else worker 0; outside multi-worker runs,
    always. Agrees with `is_chief` of the strategy made later."""
    if kind != "multiworker":
        return True
    config = _tf_config()
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def make_strategy(kind: str, logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The strategy for `kind` (none|mirrored|multiworker)."""
    if kind == "multiworker":
        _tf_config()
        split_cpu(logical_cpus)
        return tf.distribute.MultiWorkerMirroredStrategy()
    split_cpu(logical_cpus)
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    raise InputError(f"unknown distribution {kind!r}; valid: none, mirrored, multiworker")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True for the process that writes the run folder (always, outside multi-worker runs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    spec = resolver.cluster_spec().as_dict()
    if "chief" in spec:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0
