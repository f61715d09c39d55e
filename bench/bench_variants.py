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
        sessions.append(self)

    ort.InferenceSession.__init__ = patched

    @atexit.register
    def _end() -> None:
        for s in sessions:
            if profile_dir:
                print("onnxruntime profile:", s.end_profiling(), file=sys.stderr)


def _pow2_buckets() -> None:
    import server.batcher as batcher

    class Bucketed(batcher.InferenceBatcher):
        def _run_session(self, crops):
            if self.padded_batch:
                size = 1
                while size < min(len(crops), self.max_batch):
                    size *= 2
                full, self.padded_batch = self.padded_batch, min(size, self.max_batch)
                try:
                    return super()._run_session(crops)
                finally:
                    self.padded_batch = full
            return super()._run_session(crops)

    import server.registry as registry
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
