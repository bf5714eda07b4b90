"""What a Python value becomes on the wire when it is published.

One rule, applied by the client before anything is queued or sent, so a
value that cannot go fails in the caller's own line, and what subscribers
get is what the table in the README says:

============================================  ==================================
Python value                                  on the wire (what subscribers get)
============================================  ==================================
``bytes``, ``bytearray``, ``memoryview``      binary, as the whole message only
``dict``, ``list``, ``tuple``, ``str``,       JSON (keys become strings: ``1``,
``int``, ``float``, ``bool``, ``None``        dates and UUIDs as text)
``float("nan")``, ``inf``, ``-inf``           ``null`` (also inside numpy arrays)
numpy arrays and scalars                      numbers, booleans, nested lists
``datetime``, ``date``, ``time``,             ISO 8601 text
``pd.Timestamp``, ``np.datetime64``
``timedelta``, ``pd.Timedelta``,              seconds, a float
``np.timedelta64``
``pd.Series``                                 an object ``{index label: value}``
``pd.NaT``, ``pd.NA``                         ``null``
``Decimal``                                   text (exact); NaN/Infinity: null
``UUID``                                      text
``set``, ``frozenset``                        a list (sorted when it can be)
dataclasses, ``Enum`` members                 an object / the member's value
============================================  ==================================

Anything else raises :class:`~rtkit.errors.UnsupportedData`, one line naming
the type, where it is in the value, and how to convert it.

orjson does most of it (it writes NaN and infinities as ``null``, and with
``OPT_SERIALIZE_NUMPY`` arrays of numbers); :func:`_default` converts the
rest. pandas is never imported
here: a pandas value can only exist if the application imported pandas.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import math
import sys
from collections.abc import Callable
from typing import Any, Final

import orjson

from ..errors import UnsupportedData

__all__ = ["to_wire"]

_OPTIONS: Final = orjson.OPT_NON_STR_KEYS
_BINARY = (bytes, bytearray, memoryview)
# How deep the search for where an unsupported value sits goes.
_MAX_PATH_DEPTH: Final = 32


def to_wire(data: Any) -> tuple[Any, int]:
    """``(value, size)``: ``data`` as the plain JSON value (or bytes) that
    goes on the wire, and about how many bytes it takes there.

    Raises :class:`~rtkit.errors.UnsupportedData` for a value the rule
    above does not cover.
    """
    if isinstance(data, _BINARY):
        return bytes(data), len(data)
    bad: list[Any] = []
    try:
        body = orjson.dumps(data, default=_recording(bad), option=_OPTIONS)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise UnsupportedData(_explain(data, bad[-1] if bad else None, str(exc))) from None
    return orjson.loads(body), len(body)


def _recording(bad: list[Any]) -> Callable[[Any], Any]:
    def default(obj: Any) -> Any:
        try:
            return _default(obj)
        except TypeError:
            bad.append(obj)
            raise

    return default


def _default(obj: Any) -> Any:
    """A value orjson can write, for ``obj`` it cannot; TypeError if none."""
    if isinstance(obj, set | frozenset):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, dt.timedelta):  # pd.Timedelta is one too
        return _seconds(obj)
    if isinstance(obj, dt.datetime):  # pd.Timestamp: a subclass orjson refuses
        return obj.isoformat() if obj == obj else None  # NaT != NaT
    if isinstance(obj, decimal.Decimal):
        return None if obj.is_nan() or obj.is_infinite() else str(obj)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(obj, numpy.ndarray):
            return _array(numpy, obj)
        if isinstance(obj, numpy.datetime64):
            return None if numpy.isnat(obj) else str(numpy.datetime_as_string(obj))
        if isinstance(obj, numpy.timedelta64):
            return None if numpy.isnat(obj) else float(obj / numpy.timedelta64(1, "s"))
        if isinstance(obj, numpy.generic) and obj.dtype.kind in "biufU":
            return obj.item()
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        if obj is pandas.NaT or obj is pandas.NA:
            return None
        if isinstance(obj, pandas.Series):
            return {_key(k): v for k, v in obj.items()}
        if isinstance(obj, pandas.Index):
            return obj.tolist()
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def _array(numpy: Any, arr: Any) -> Any:
    kind = arr.dtype.kind
    if kind in "biuf":
        # orjson writes arrays of numbers and booleans itself, NaN as null;
        # not its datetime64 (it writes NaT as a date in 1677), handled below.
        try:
            return orjson.Fragment(
                orjson.dumps(numpy.ascontiguousarray(arr), option=orjson.OPT_SERIALIZE_NUMPY)
            )
        except TypeError:
            return arr.tolist()
    if kind == "M":
        text = numpy.datetime_as_string(arr).astype(object)
        text[numpy.isnat(arr)] = None
        return text.tolist()
    if kind == "m":
        return _array(numpy, arr / numpy.timedelta64(1, "s"))  # NaT becomes NaN: null
    return arr.tolist()


def _seconds(delta: dt.timedelta) -> float | None:
    seconds = delta.total_seconds()
    return None if math.isnan(seconds) else seconds


def _key(key: Any) -> Any:
    """An object key orjson can write (it takes str, numbers, dates, UUIDs)."""
    if isinstance(key, dt.datetime):
        return key.isoformat()
    if isinstance(key, str | int | float | bool | dt.date | dt.time) or key is None:
        return key
    return str(key)


def _explain(data: Any, bad: Any, detail: str) -> str:
    """One line: what could not be published, where, and how to fix it."""
    if bad is None:
        # orjson refused a value of a type it knows (an int over 64 bits,
        # a str with lone surrogates, a dict key of an odd type).
        if "64-bit" in detail or "Integer" in detail:
            return (
                f"cannot publish an integer beyond 64 bits ({detail}): "
                "send it as str(value), or as a float"
            )
        return f"cannot publish this value: {detail}"
    name = _type_name(bad)
    where = _path_to(data, bad)
    place = f" at {where}" if where else ""
    return f"cannot publish a value of type {name}{place}: {_fix(bad)}"


def _type_name(obj: Any) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _fix(obj: Any) -> str:
    rule = "(the rule: README, 'What you can publish')"
    if isinstance(obj, _BINARY):
        return (
            "bytes go only as a whole message (publish(b'...')); inside a JSON value "
            f"encode them first, e.g. base64.b64encode(value).decode() {rule}"
        )
    if isinstance(obj, complex) or type(obj).__name__.startswith("complex"):
        return f"JSON has no complex numbers: send [value.real, value.imag] {rule}"
    if type(obj).__name__ == "DataFrame":
        return (
            "publish a DataFrame with channel.publish_frame(df), or its rows "
            "one by one: for row in df.to_dict('records'): channel.publish(row)"
        )
    if dataclasses.is_dataclass(obj) or hasattr(obj, "to_dict"):
        return f"convert it first, e.g. value.to_dict() or dataclasses.asdict(value) {rule}"
    if hasattr(obj, "tolist"):
        return f"convert it first, e.g. value.tolist() {rule}"
    return (
        "publish JSON values, bytes, numpy or pandas values, dates and times, "
        f"Decimal, UUID or sets; convert it first, e.g. str(value) or float(value) {rule}"
    )


def _path_to(data: Any, target: Any) -> str:
    """Where ``target`` sits inside ``data`` (``data['a'][3]``), or ''."""
    stack: list[tuple[Any, str, int]] = [(data, "data", 0)]
    seen: set[int] = set()
    while stack:
        value, path, depth = stack.pop()
        if value is target:
            return path if depth else ""
        if depth >= _MAX_PATH_DEPTH or id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            stack.extend((v, f"{path}[{k!r}]", depth + 1) for k, v in reversed(value.items()))
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(items))
    return ""
