"""Child process of tests/test_trainer_distribute.py: mirrored training on two logical CPUs.

    python tests/mirrored_child.py SET_A.npz SET_B.npz RUNS_DIR

Runs in a fresh process because the CPU must be split before TensorFlow starts up. Prints one
line `RESULT{json}`: the largest weight difference between one step on two replicas and the
same step on one device, how far the weights moved, and a short mirrored `vae-gan` run's figures.
"""
from __future__ import annotations

import json
import sys

import keras
import numpy as np
import tensorflow as tf

from swapstream.trainer.distribute import make_strategy
from swapstream.trainer.methods import build_method, preset_config
from swapstream.trainer.runs import load_run
from swapstream.trainer.session import TrainRequest, train_run


def main(a: str, b: str, out: str) -> dict:
    strategy = make_strategy("mirrored", logical_cpus=2)
    assert strategy.num_replicas_in_sync == 2

    # One step on two replicas equals one step on one device with the same batch: the
    # per-replica losses are scaled so that summed gradients give the global-batch mean.
    # Plain SGD for this check: Adam's first steps move every weight by about lr * sign(g), so
    # a gradient near zero that rounds differently on two replicas (summation order) would
    # move its weight by up to lr either way and hide what is compared.
    rng = np.random.default_rng(0)
    # The tiny ae reads 32 px faces and paints them at 64 px (its 2x head).
    batch = {k: rng.random((4, side, side, 3), dtype=np.float32)
             for k, side in (("warped_a", 32), ("target_a", 64), ("warped_b", 32), ("target_b", 64))}
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    single = build_method("ae", preset_config("ae", "tiny"), seed=1)
    single.compile({"ae": keras.optimizers.SGD(0.5)})
    with strategy.scope():
        mirrored = build_method("ae", preset_config("ae", "tiny"), seed=1)
        mirrored.compile({"ae": keras.optimizers.SGD(0.5)})
    start = single.get_weights()
    mirrored.set_weights(start)
    single.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
    mirrored.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
    diff = max(float(np.abs(x - y).max()) for x, y in zip(single.get_weights(), mirrored.get_weights()))
    moved = max(float(np.abs(x - y).max()) for x, y in zip(single.get_weights(), start))

    results = {"weight_diff": diff, "moved": moved}
    for method in ("vae-gan",):  # the autoencoder path is the equivalence check above
        run = f"{out}/{method}"
        summary = train_run(TrainRequest(out=run, method=method, a=a, b=b, preset="tiny", steps=4,
                                         checkpoint_every=2, distribute="mirrored", logical_cpus=2,
                                         progress=False), strategy)
        results[method] = {"replicas": summary["replicas"], "step": summary["step"],
                           "loaded_step": load_run(run).step}
    return results


if __name__ == "__main__":
    print("RESULT" + json.dumps(main(*sys.argv[1:4])))
