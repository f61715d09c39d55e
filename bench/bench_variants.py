"""`swapstream bench --in-process` (or any swapstream command) with serving variants switched on
from the environment, for experiments such as the multi-stream CUDA stall (docs/serving.md):

    NICE_STREAMS=N      every thread but the inference workers ("infer-*") runs at nice +N
    ORT_PROFILE=DIR     onnxruntime profiling of every session, written under DIR at exit
                        (summarise with bench/ort_profile_summary.py DIR)
    CUDA_OPTS=k=v,...   CUDA execution provider options for every session
                        (e.g. cudnn_conv_algo_search=HEURISTIC)
    BUCKETS=pow2        CUDA batches padded to 1, 2, 4, 8, ... max_batch (the old behaviour)
                        instead of always max_batch

    python bench/bench_variants.py bench --model M --in-process MODELS --device cuda --streams 4
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _nice_streams(n: int) -> None:
    run = threading.Thread.run

    def niced(self):
        if not self.name.startswith("infer-"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), n)
        return run(self)

    threading.Thread.run = niced


def _patch_sessions(profile_dir: str | None, cuda_opts: dict | None) -> None:
    sessions = []
    init = ort.InferenceSession.__init__

    def patched(self, path, opts=None, providers=None, **kw):
        if profile_dir:
            opts = opts or ort.SessionOptions()
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(profile_dir, "ort")
        if cuda_opts and providers and "CUDAExecutionProvider" in str(providers[0]):
            providers = [("CUDAExecutionProvider", cuda_opts), *providers[1:]]
        init(self, path, opts, providers=providers, **kw)
        if profile_dir:
            sessions.append(self)

    ort.InferenceSession.__init__ = patched

    @atexit.register
    def _end() -> None:  # profiles are written when profiling ends
        for s in sessions:
            print("onnxruntime profile:", s.end_profiling(), file=sys.stderr)


def _pow2_buckets() -> None:
    import server.batcher as batcher
    import server.registry as registry

    class Bucketed(batcher.InferenceBatcher):
        """Pads a CUDA batch to the next power of two (at most max_batch) instead of max_batch."""

        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.pow2, self.padded_batch = self.padded_batch is not None, None

        def warm_up(self):
            """Every padded size once, as the old padding did."""
            if not self.pow2:
                return super().warm_up()
            side, size = self.manifest.crop_size, 1
            while True:
                self.infer(np.zeros((size, side, side, 3), np.uint8))
                if size >= self.max_batch:
                    return None
                size = min(2 * size, self.max_batch)

        def _run_session(self, crops):
            n = len(crops)
            size = 1
            while size < min(n, self.max_batch):
                size *= 2
            if not self.pow2 or n >= size:
                return super()._run_session(crops)
            padded = np.concatenate([crops, np.zeros((size - n, *crops.shape[1:]), crops.dtype)])
            faces, masks, ms = super()._run_session(padded)
            return faces[:n], None if masks is None else masks[:n], ms

    registry.InferenceBatcher = Bucketed


def main() -> int:
    if int(os.environ.get("NICE_STREAMS", "0")):
        _nice_streams(int(os.environ["NICE_STREAMS"]))
    opts = os.environ.get("CUDA_OPTS")
    cuda_opts = dict(kv.split("=", 1) for kv in opts.split(",")) if opts else None
    if os.environ.get("ORT_PROFILE") or cuda_opts:
        _patch_sessions(os.environ.get("ORT_PROFILE"), cuda_opts)
    if os.environ.get("BUCKETS") == "pow2":
        _pow2_buckets()
    from clients.cli import main as swapstream

    return swapstream(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
