"""The event stream format of the SSE bridge (rtkit.bridges.web.SseParser), fed bytes."""

from __future__ import annotations

import pytest

from rtkit.bridges.web import SseEvent, SseParser, SseSource, WebSocketSource
from rtkit.errors import ConfigurationError

STREAM = (
    b"\xef\xbb\xbf: a comment\n"
    b"retry: 2500\n"
    b"id: 1\nevent: tick\ndata: one\n\n"
    b"data: two\ndata: lines\n\n"  # no id: keeps the last one, has none of its own
    b"id\ndata:three\n\n"  # an empty id resets the last event id
    b"id: 4\0bad\nid: 4\ndata\n\n"  # an id with NUL is ignored; data with no value is ""
    b"id: 5\n\n"  # an id and no data: no event, the id still counts
    b"event: lost\ndata: never dispatched"
)

EXPECTED = [
    SseEvent("tick", "one", "1", "1"),
    SseEvent("message", "two\nlines", None, "1"),
    SseEvent("message", "three", None, ""),
    SseEvent("message", "", "4", "4"),
]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_events_whatever_the_line_ends_and_chunks(eol: bytes, chunk: int) -> None:
    stream = STREAM.replace(b"\n", eol)
    parser = SseParser()
    events = []
    for start in range(0, len(stream), chunk):
        events += parser.feed(stream[start : start + chunk])
    assert events == EXPECTED
    assert parser.last_id == "5"
    assert parser.retry == 2.5


def test_a_line_over_the_bound_cuts_its_event_without_holding_it() -> None:
    parser = SseParser(max_size=16)
    events = parser.feed(b"id: 1\ndata: " + b"x" * 10)
    for _ in range(1000):  # the line goes on and on: none of it is kept
        assert parser.feed(b"x" * 100) == []
    assert len(parser._line) <= 16
    events += parser.feed(b"\nid: 2\n\ndata: ok\n\n")
    assert events == [
        SseEvent("message", "", "2", "2", "a line of an event is over 16 bytes: event dropped"),
        SseEvent("message", "ok", None, "2"),
    ]


def test_data_over_the_bound_cuts_the_event() -> None:
    parser = SseParser(max_size=10)
    events = parser.feed(b"id: 9\ndata: 1234\ndata: 5678\ndata: 9\ndata: more\n\n")
    assert events == [
        SseEvent("message", "", "9", "9", "the data of an event is over 10 bytes: event dropped")
    ]


def test_a_parser_resumes_with_the_last_id_it_is_given() -> None:
    parser = SseParser(last_id="41")
    assert parser.feed(b"data: x\n\n") == [SseEvent("message", "x", None, "41")]


def test_bad_settings_are_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match="max_size"):
        SseParser(max_size=0)
    with pytest.raises(ConfigurationError, match="payload"):
        WebSocketSource("ws://127.0.0.1:1/", topics="x", payload="yaml")
    with pytest.raises(ConfigurationError, match="name"):
        SseSource("http://127.0.0.1:1/", topics="x", name="n" * 100)
    with pytest.raises(ConfigurationError, match="template"):
        SseSource("http://127.0.0.1:1/", topics="x.{field}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--header", "no colon here"], "a header is 'NAME: VALUE'"),
        (["--header-env", "Authorization=RTKIT_TEST_UNSET_VARIABLE"], "is not set"),
        (["--header-env", "Authorization"], "NAME=VARIABLE"),
        (["--max-size", "0"], "max_size"),
    ],
)
def test_the_command_line_refuses_bad_web_options_clearly(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rtkit.cli import main

    argv = ["bridge", "sse", "http://127.0.0.1:9/", "--to", "x", "--url", "http://127.0.0.1:9"]
    assert main([*argv, *args]) == 2
    assert message in capsys.readouterr().err


def test_the_command_line_builds_web_sources_with_their_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rtkit.bridges._cli import source_from_args
    from rtkit.cli import build_parser

    monkeypatch.setenv("FEED_TOKEN", "Bearer from-env")
    argv = ["bridge", "websocket", "ws://h/feed", "--to", "s.{topic}", "--topic-field", "id"]
    headers = ["--header", "X-Team: data", "--header-env", "Authorization=FEED_TOKEN"]
    args = build_parser().parse_args([*argv, *headers])
    source = source_from_args(args)
    assert isinstance(source, WebSocketSource)
    assert source._headers == {"X-Team": "data", "Authorization": "Bearer from-env"}
    assert source.topics.channel("a/b") == "s.a.b"
