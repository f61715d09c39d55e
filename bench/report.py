"""The end of a bench script: print its report as JSON and, with --json, write the same text there."""
from __future__ import annotations

import json


def print_report(report: dict, json_path: str | None) -> int:
    """Print `report` as indented JSON; write the same text to `json_path` if given. Returns 0 (the exit code)."""
    text = json.dumps(report, indent=2)
    print(text)
    if json_path:
        # Imported here: stream_fps.load_before may first swap in an older checkout's swapstream.faces.
        from swapstream.faces.files import write_text

        write_text(json_path, text + "\n")
    return 0
