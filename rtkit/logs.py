"""Logging for rtkit's processes: text or JSON lines, never a credential.

:func:`configure_logging` gives the root logger one stderr handler with a
:class:`RedactingFilter` and either the text format or :class:`JsonFormatter`
(``rtkit --log-format json``: one JSON object per line with ``time``,
``level``, ``logger``, ``message``, any ``extra`` fields and ``exception``).

The filter sits on the handler, so it sees every record that reaches it
from any logger: rtkit's own, the web servers' (tornado's access log writes
each request's URI, with its query string, at INFO), aiohttp's, uvicorn's
(its host lets records propagate instead of installing its own handlers)
and any library's. It masks, in the message, the traceback and ``extra``
fields (one that is not a string or a number becomes its JSON text):

- the values it is given (the hub's token secret, API key, webhook secret),
- JWTs (``eyJ...``; rtkit's tokens and kernel tokens are JWTs),
- credentials in URLs (``redis://:pw@host``, and query values such as
  ``?token=``, ``password=``, ``api_key=``, relative URIs too),
- ``Authorization``, ``X-API-Key`` and ``Cookie`` headers and ``Bearer``
  values, also as ``'key': 'value'`` pairs in a logged dict.

    >>> redact_text("GET /socket.io/?EIO=4&token=abc123 Authorization: Bearer xyz")
    'GET /socket.io/?EIO=4&token=*** Authorization: Bearer ***'
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .storage.redact import REDACTED, redact_url

__all__ = ["LOG_FORMATS", "JsonFormatter", "RedactingFilter", "configure_logging", "redact_text"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Query or form parameters whose value is a credential.
_SECRET_PARAMS = (
    r"(?:access_?)?token|id_token|refresh_token|api[_-]?key|apikey|x-api-key|secret"
    r"|client_secret|password|passwd|pwd|pass|auth|signature"
)
# Words one of which a text must hold (lowercased) for a rule to apply: most
# log lines hold none, and a substring test is far cheaper than the regex.
_PARAM_WORDS = ("token", "key", "secret", "pass", "pwd", "auth", "signature")
_RULES: tuple[
    tuple[tuple[str, ...], re.Pattern[str], str | Callable[[re.Match[str]], str]], ...
] = (
    # 'authorization': 'Bearer x', "token": "x" (a dict or JSON logged whole;
    # only where a quote is: this is the costly one).
    (
        (*_PARAM_WORDS, "cookie"),
        re.compile(
            r"""(?i)(["']?\b(?:authorization|proxy-authorization|x-api-key|cookie|"""
            + _SECRET_PARAMS
            + r""")["']?\s*[:=]\s*["'])[^"']*(["'])"""
        ),
        rf"\g<1>{REDACTED}\g<2>",
    ),
    # Authorization: Bearer x / X-API-Key: x / Cookie: a=b; c=d (header lines).
    (
        ("authorization", "x-api-key"),
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|x-api-key)(\s*[:=]\s*)"
            r"(?:(bearer|token|basic)\s+)?[^\s,;'\"]+"
        ),
        lambda m: f"{m[1]}{m[2]}{m[3] + ' ' if m[3] else ''}{REDACTED}",
    ),
    (("cookie",), re.compile(r"(?i)\b(cookie)(\s*[:=]\s*)[^\r\n'\"]+"), rf"\g<1>\g<2>{REDACTED}"),
    (("bearer",), re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\g<1> {REDACTED}"),
    # ?token=x&api_key=y, also in relative URIs (an access log's request line).
    (
        _PARAM_WORDS,
        re.compile(r"(?i)(^|[?&;\s,(])(" + _SECRET_PARAMS + r")=([^&\s'\",;)#]+)"),
        rf"\g<1>\g<2>={REDACTED}",
    ),
    # A JWT wherever it stands: header.payload.signature, the header JSON.
    (
        ("eyj",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        REDACTED,
    ),
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>]+")
# The fields every LogRecord has; anything else came in through ``extra``.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked (see the module's docstring);
    ``secrets`` are literal values to mask as well."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    lowered = text.lower()
    quoted = "'" in text or '"' in text
    for number, (words, pattern, replacement) in enumerate(_RULES):
        if (number or quoted) and any(word in lowered for word in words):
            text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks credentials in every record that passes (put it on handlers:
    a logger's own filters do not see its children's records).

    >>> handler.addFilter(RedactingFilter(secrets=[hub_secret, api_key]))
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole;
        # very short values would mask ordinary words.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad %-format in some library's call
            message = f"{record.msg!r} % {record.args!r} (unformattable: {exc})"
        record.msg = self._redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS:
                continue
            if isinstance(value, str):
                record.__dict__[key] = self._redact(value)
            elif not isinstance(value, int | float | bool | type(None)):
                record.__dict__[key] = self._redact(_json_text(value))
        return True

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601),
    ``level``, ``logger``, ``message``, the record's ``extra`` fields, and
    ``exception`` / ``stack`` when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        millis = int(record.created * 1000) % 1000
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return _json_text(entry)


def _json_text(value: Any) -> str:
    return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str, log_format: str = "text", secrets: Iterable[str] = ()) -> None:
    """Log to stderr at ``level`` in ``log_format`` (``text`` or ``json``),
    masking credentials and the given ``secrets`` in every record."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    logging.basicConfig(level=level, handlers=[handler])
    # Warnings and a crash's traceback go through logging too, so they are
    # in the same format and masked as well.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("rtkit").critical("stopped by an unexpected error", exc_info=(kind, exc, tb))
