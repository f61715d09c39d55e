"""`swapstream train --set KEY=VALUE`: change one field of a method's config for a new run.

The presets fix every network size and loss weight; a researcher trying a narrower decoder or
another loss weight would otherwise have to start a run, edit its config.yaml and resume it.
`--set` takes the field names of the method's config dataclass (the `model:` section of
config.yaml) and parses each value as the type the field already has: `decoder_filters=64,32,16`
(a tuple), `expression_weight=5`, `jit_compile=false`. Keys starting `augment.` change the
augmentation instead (the `augment:` section, `trainer.data.AugmentConfig`), e.g.
`augment.rotation_deg=0`. Unknown names and unparsable values are InputErrors that name the valid
fields; the result goes through the config's own validation.
"""
from __future__ import annotations

import dataclasses

from swapstream.faces.errors import InputError

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
# Fields with a flag of their own that does more than set the field.
_OWN_FLAG = {"dtype_policy": "--precision (which also checks the CPU can run it)"}


def parse_assignments(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """("KEY=VALUE", ...) -> ((KEY, VALUE), ...); InputError for an item without '='."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _scalar(text: str, like, where: str):
    try:
        if isinstance(like, bool):  # before int: bool is an int subclass
            lowered = text.lower()
            if lowered not in _TRUE + _FALSE:
                raise ValueError
            return lowered in _TRUE
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError:
        raise InputError(f"--set {where}: {text!r} is not a {type(like).__name__}") from None
    return text


def _parse(key: str, text: str, current):
    if isinstance(current, tuple):
        items = [t.strip() for t in text.strip("()[]").split(",") if t.strip()]
        if not items:
            raise InputError(f"--set {key}: give one or more comma-separated values")
        like = current[0] if current else 0
        return tuple(_scalar(t, like, key) for t in items)
    return _scalar(text, current, key)


def split_section(assignments: tuple[tuple[str, str], ...], section: str):
    """(the assignments of `section.KEY` with the prefix taken off, the others)."""
    prefix = section + "."
    inside = tuple((k[len(prefix):], v) for k, v in assignments if k.startswith(prefix))
    return inside, tuple((k, v) for k, v in assignments if not k.startswith(prefix))


def apply_settings(model, assignments: tuple[tuple[str, str], ...], section: str = ""):
    """The config dataclass `model` with each (field, text) assignment applied and validated;
    `section` ("augment") only names the keys in error messages."""
    if not assignments:
        return model
    prefix = section + "." if section else ""
    names = [f.name for f in dataclasses.fields(model)]
    changes = {}
    for key, text in assignments:
        where = prefix + key
        if key in _OWN_FLAG:
            raise InputError(f"--set {where}: use {_OWN_FLAG[key]}")
        if key not in names:
            raise InputError(f"--set {where}: {type(model).__name__} has no field {key!r}; "
                             f"valid fields: {', '.join(prefix + n for n in names)}")
        changes[key] = _parse(where, text, getattr(model, key))
    model = dataclasses.replace(model, **changes)
    model.validate()
    return model
