"""How the persistent stores (SQLite, Redis) keep a message's data: a kind
tag and a payload, so that bytes stay bytes and JSON reads back exactly."""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

KIND_JSON: Final = 0  # JSON text from orjson
KIND_BYTES: Final = 1  # raw bytes
KIND_JSON_STDLIB: Final = 2  # JSON text orjson cannot read back exactly (ints over 64 bits)


def encode_data(data: Any) -> tuple[int, str | bytes]:
    """``(kind, payload)`` for a message's data; raises TypeError for non-JSON data."""
    if isinstance(data, bytes | bytearray | memoryview):
        return KIND_BYTES, bytes(data)
    try:
        return KIND_JSON, orjson.dumps(data).decode()
    except TypeError:
        # Ints over 64 bits or lone surrogates: the stdlib keeps both exactly
        # (ensure_ascii escapes surrogates, which SQLite could not store).
        return KIND_JSON_STDLIB, json.dumps(data, separators=(",", ":"))


def decode_data(kind: int, payload: str | bytes) -> Any:
    """The data :func:`encode_data` made ``(kind, payload)`` of."""
    if kind == KIND_JSON:
        return orjson.loads(payload)
    if kind == KIND_BYTES:
        return bytes(payload) if isinstance(payload, bytes) else payload.encode()
    return json.loads(payload)
