"""Transitional re-export: the model-folder contract now lives in `swapstream.faces.model_folder`.

Kept only until the exporter imports it from there; new code imports `swapstream.faces.model_folder`.
"""
from swapstream.faces.model_folder import (  # noqa: F401
    DIRECTIONS,
    DTYPES,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_ORT_TYPE,
    PRECISIONS,
    Manifest,
    ManifestError,
    check_session_io,
    file_sha256,
    load_manifest,
    new_manifest,
    producer_string,
    write_manifest,
)
