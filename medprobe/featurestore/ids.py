"""Identifiers: time-ordered random ids and stable content hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any

_ID_TIME = "%Y%m%dT%H%M%S%f"


def new_id(prefix: str = "") -> str:
    """A unique id that sorts by creation time: ``<prefix>-20261122T101500123456-<12 hex>``."""
    stamp = dt.datetime.now(dt.UTC).strftime(_ID_TIME)
    body = f"{stamp}-{secrets.token_hex(6)}"
    return f"{prefix}-{body}" if prefix else body


def id_time(identifier: str) -> dt.datetime | None:
    """The creation time encoded in an id made by :func:`new_id`, or None if it has none."""
    for part in identifier.split("-"):
        if len(part) == 21 and part[8] == "T":
            try:
                return dt.datetime.strptime(part, _ID_TIME).replace(tzinfo=dt.UTC)
            except ValueError:
                return None
    return None


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings (stored labels, params, id keys).

    Non-ASCII text is kept as is; objects JSON does not know become ``str(obj)``.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_json(value: Any) -> str:
    """Canonical JSON of a model's preprocessing config (``feature_sets.preprocessing``, part of the feature-set id).

    Sorted keys, no whitespace, non-ASCII escaped, and objects JSON does not know (enums, paths) as ``repr(obj)``,
    so two different objects never serialise alike. Feature-set ids of existing stores depend on exactly this.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def stable_hash(value: Any, length: int = 16) -> str:
    """A short sha256 of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]
