"""The resolved run configuration: what config.yaml in a run folder holds.

    RunConfig(method, preset, model=<the method's config dataclass>, train=TrainConfig,
              data=DataConfig, augment=AugmentConfig)

All are frozen dataclasses; `to_dict`/`from_dict` convert to and from plain YAML-able dicts, and
`from_dict` rejects missing keys with an InputError that names them, and drops (with one log
line each) keys of options this version does not have, so runs made before an option was removed
still load.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from swapstream.faces.align import AlignTemplate
from swapstream.faces.errors import InputError
from swapstream.faces.files import write_text
from swapstream.trainer.methods import config_class
from swapstream.trainer.methods.configs import io_sizes
from swapstream.trainer.preset import AugmentConfig, TrainConfig

CONFIG_FILE = "config.yaml"


def template_dict(template: AlignTemplate | None) -> dict | None:
    """A template as the plain dict run configs and manifests hold ({size, eye_distance, eye_line})."""
    if template is None:
        return None
    return {"size": int(template.size), "eye_distance": float(template.eye_distance),
            "eye_line": float(template.eye_line)}


def template_from_dict(values: dict | None) -> AlignTemplate | None:
    """The inverse of `template_dict` (InputError for a malformed one)."""
    if values is None:
        return None
    try:
        return AlignTemplate(size=int(values["size"]), eye_distance=float(values["eye_distance"]),
                             eye_line=float(values["eye_line"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"align_template {values!r} is not a valid template: {exc}") from exc


@dataclass(frozen=True)
class DataConfig:
    """The face sets and how they were cut (the exporter and server need the margin, or the
    alignment template the faces were aligned to: {size, eye_distance, eye_line}; None for sets
    of Haar squares and for runs made before alignment)."""

    a: str
    b: str
    margin: float
    faces_a: int
    faces_b: int
    source_size_a: int
    source_size_b: int
    align_template: dict | None = None


@dataclass(frozen=True)
class RunConfig:
    method: str
    preset: str
    model: object  # the method's frozen config dataclass
    train: TrainConfig
    data: DataConfig
    augment: AugmentConfig
    # "section.key=value" of each key config.yaml held that this version has no field for
    # (options removed since the run was made); never written back.
    dropped: tuple[str, ...] = ()

    @property
    def template(self):
        """The faces.align.AlignTemplate the run's faces were aligned to, or None."""
        return template_from_dict(self.data.align_template)

    @property
    def io_sizes(self) -> tuple[int, int]:
        """(input side, output side) of the run's networks (the output is 2x with upscale 2)."""
        return io_sizes(self.model)

    def dropped_hint(self) -> str:
        """What to add to a "checkpoint does not fit" error when keys were dropped ("" if none)."""
        if not self.dropped:
            return ""
        return (f"its config.yaml held option(s) this version does not have ({', '.join(self.dropped)}), "
                "so another version made it: train a new run, or export it with the version that made it")


def to_dict(cfg: RunConfig) -> dict:
    """Plain dict (tuples as lists) for YAML."""
    def plain(obj):
        d = dataclasses.asdict(obj)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    return {"method": cfg.method, "preset": cfg.preset, "model": plain(cfg.model),
            "train": plain(cfg.train), "data": plain(cfg.data), "augment": plain(cfg.augment)}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _build(cls, values, where: str, section: str, dropped: list[str], log: Callable[[str], None]):
    """`cls` from a config.yaml section. A key `cls` has no field for is dropped with one `log`
    line (an option removed since the run was made; the checkpoint check catches one that shaped
    the networks); a missing key without a default is an InputError."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in sorted(set(values) - set(fields), key=str):
        dropped.append(f"{section}.{key}={values[key]!r}")
        log(f"{where}: dropped {dropped[-1]}: this version has no such option (removed since the run "
            "was made); the run loads without it")
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
    try:
        return cls(**converted)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from exc


def from_dict(d: dict, where: str = CONFIG_FILE, log: Callable[[str], None] = _stderr) -> RunConfig:
    """RunConfig from a dict read from config.yaml (InputError naming any bad or missing key;
    keys of options this version does not have are dropped with one `log` line each)."""
    if not isinstance(d, dict):
        raise InputError(f"{where} does not hold a mapping")
    for key in ("method", "preset", "model", "train", "data", "augment"):
        if key not in d:
            raise InputError(f"{where} lacks '{key}'")
    dropped: list[str] = []
    sections = {name: _build(cls, d[name], f"{where} {name}", name, dropped, log)
                for name, cls in (("model", config_class(d["method"])), ("train", TrainConfig),
                                  ("data", DataConfig), ("augment", AugmentConfig))}
    sections["model"].validate()
    return RunConfig(d["method"], d["preset"], **sections, dropped=tuple(dropped))


def write_config(run_dir: str, cfg: RunConfig) -> None:
    """Atomically write RUN/config.yaml (block style, keys in the dataclasses' order)."""
    write_text(os.path.join(run_dir, CONFIG_FILE),
               yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False))


def read_config(run_dir: str) -> RunConfig:
    """Load RUN/config.yaml (InputError if missing or malformed)."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise InputError(f"{run_dir} is not a training run: {CONFIG_FILE} is missing")
    try:
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from exc
    return from_dict(d, path)
