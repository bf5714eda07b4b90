"""The credential filter and the JSON formatter of rtkit.logs, one record at a time."""

from __future__ import annotations

import logging

import orjson
import pytest

from rtkit.hub.auth import mint_token
from rtkit.logs import JsonFormatter, RedactingFilter, redact_text

TOKEN = mint_token("unit-secret-0123456789abcdef0123456789", "ann", publish=["*"])


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"200 GET /socket.io/?EIO=4&token={TOKEN}&transport=polling", "EIO=4&token=***", TOKEN),
        ("GET /api/x?access_token=abc123def&limit=5", "limit=5", "abc123def"),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer ***", TOKEN),
        ("authorization=token 0123abcd4567", "authorization=token ***", "0123abcd4567"),
        ("X-API-Key: k-0123456789abcdef", "X-API-Key: ***", "k-0123456789abcdef"),
        ("{'x-api-key': 'k-0123456789', 'accept': '*/*'}", "'accept': '*/*'", "k-0123456789"),
        ('{"token": "tok-0123456789", "channel": "prices"}', '"channel": "prices"', "tok-0123"),
        ("store redis://default:pw-0123456789@h:6379/0", "redis://default:***@h", "pw-0123456789"),
        ("rediss://pw-0123456789@h/0 down", "rediss://***@h/0", "pw-0123456789"),
        ("Cookie: _xsrf=abc; session=s-0123456789", "Cookie: ***", "s-0123456789"),
        (f"bad token {TOKEN} refused", "bad token *** refused", TOKEN),
        ("published to prices seq=4 key=lab", "seq=4 key=lab", "***"),
    ],
)
def test_credentials_are_masked_and_the_rest_kept(text: str, kept: str, gone: str) -> None:
    redacted = redact_text(text)
    assert kept in redacted
    assert gone not in redacted


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("rtkit.test", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_the_filter_masks_arguments_extras_tracebacks_and_given_secrets() -> None:
    masking = RedactingFilter(secrets=["plain-secret-value", "abc"])
    try:
        raise ValueError(f"cannot use {TOKEN}")
    except ValueError as exc:
        rec = record(
            "connect %s with %s failed",
            f"http://h/?token={TOKEN}",
            "plain-secret-value",
            headers={"Authorization": f"Bearer {TOKEN}"},
            user="abc",
        )
        rec.exc_info = (type(exc), exc, exc.__traceback__)
    assert masking.filter(rec)
    text = JsonFormatter().format(rec)
    assert TOKEN not in text and "plain-secret-value" not in text
    entry = orjson.loads(text)
    assert entry["message"] == "connect http://h/?token=*** with *** failed"
    assert entry["user"] == "abc"  # values shorter than 6 characters are not masked
    assert entry["headers"] == '{"Authorization":"***"}'  # as masked JSON text
    assert "ValueError: cannot use ***" in entry["exception"]
    assert entry["logger"] == "rtkit.test" and entry["level"] == "WARNING"


def test_a_record_that_does_not_format_still_passes() -> None:
    rec = record("%d items", "not a number")
    assert RedactingFilter().filter(rec)
    assert "unformattable" in rec.getMessage()
