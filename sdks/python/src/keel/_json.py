"""JSON as Keel's Rust SDK writes it: compact, UTF-8, no NaN."""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    raise TypeError(f"a value JSON cannot represent: {type(value).__name__}")


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text (``{"a":1}``); dataclasses become objects.

    Raises ``TypeError``/``ValueError`` for a value JSON cannot represent (NaN, a set of
    objects, a dict with non-string keys is written with ``str`` keys as ``json`` does).
    """
    return json.dumps(
        value,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=sort_keys,
        default=_default,
    )


def to_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    return dumps(value, sort_keys=sort_keys).encode("utf-8")


def to_value(value: Any) -> Any:
    """A JSON copy of ``value`` (dicts, lists, str, int, float, bool, None): what is written is
    what the value was when it was given, like ``serde_json::to_value``."""
    return json.loads(dumps(value))
