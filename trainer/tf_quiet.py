"""Import TensorFlow without its start-up chatter: a command's stderr is for its own messages.

TensorFlow's native libraries write a few INFO lines (oneDNN, CUDA drivers) while they load,
before their logging is set up, so TF_CPP_MIN_LOG_LEVEL cannot hold them back: the file
descriptor of stderr points at /dev/null for the length of the import instead. Python errors
from the import are exceptions and still reach the caller.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """Return the tensorflow module, imported quietly if this is the first import: TF's C++ log
    level defaults to 2 (errors only), the load-time lines go nowhere, TF's Python logger and
    absl's report errors only. Call it before anything else imports TensorFlow."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _native_stderr_silenced():
            import tensorflow  # noqa: F401
    import absl.logging
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity(absl.logging.ERROR)
    return tf
