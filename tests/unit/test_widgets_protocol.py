"""The widgets' JavaScript speaks rtkit's wire protocol as protocol.py defines it.

The browser side of the widgets (rtkit/widgets/js/src) names every event and
error code it uses in one module, protocol.js. These tests read the sources
as text, so they need neither Node.js nor a build: protocol.js must agree
with rtkit.protocol, the other sources must take their event names from it,
and the bundle's entry must render exactly the widget kinds the Python
classes name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from rtkit import protocol

SRC = Path(__file__).resolve().parents[2] / "rtkit" / "widgets" / "js" / "src"
# Socket.IO's own events, not rtkit's: the client library emits them itself.
SOCKETIO_RESERVED = {"connect", "disconnect", "connect_error"}


def _string_constants(source: str) -> dict[str, str]:
    return dict(re.findall(r'^export const (\w+) = "([^"]*)";$', source, re.MULTILINE))


def _sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(SRC.glob("*.js"))}


def test_protocol_js_names_what_protocol_py_names() -> None:
    constants = _string_constants((SRC / "protocol.js").read_text())
    # Presence event kinds have no constant of their own in protocol.py.
    kinds = {name: value for name, value in constants.items() if name.startswith("PRESENCE_EVENT_")}
    assert kinds, "protocol.js names no presence event kind"
    for name, value in kinds.items():
        assert value in get_args(protocol.PresenceEventName), (name, value)
    wire = {name: value for name, value in constants.items() if name not in kinds}
    assert {"NAMESPACE", "SUBSCRIBE", "MESSAGES", "PRESENCE"} <= wire.keys(), wire
    for name, value in wire.items():
        assert getattr(protocol, name, None) == value, f"protocol.js: {name} = {value!r}"


def test_transient_error_codes_are_protocol_error_codes() -> None:
    source = (SRC / "protocol.js").read_text()
    match = re.search(r"export const TRANSIENT_ERROR_CODES = new Set\(\[([^\]]*)\]\);", source)
    assert match is not None, "protocol.js has no TRANSIENT_ERROR_CODES"
    codes = set(re.findall(r'"([^"]*)"', match.group(1)))
    # The codes the Python client retries too (DESIGN: worth another try later).
    assert codes == {"rate_limited", "unavailable", "internal"}
    assert codes <= protocol.ERROR_CODES


@pytest.mark.parametrize("name", sorted(set(_sources()) - {"protocol.js"}))
def test_sources_take_event_names_from_protocol_js(name: str) -> None:
    source = _sources()[name]
    assert not re.findall(r"\.emit\(\s*[\"'`]", source), f"{name} emits a literal event name"
    listened = set(re.findall(r"socket\.on\(\s*[\"'`]([^\"'`]+)", source))
    assert listened <= SOCKETIO_RESERVED, f"{name} listens to {listened - SOCKETIO_RESERVED}"
    assert not re.findall(r"[\"'](?:rate_limited|unavailable|internal)[\"']", source), name


def test_the_bundle_renders_every_widget_kind() -> None:
    pytest.importorskip("anywidget")
    from rtkit.widgets import HubMonitor, LiveChart, LiveTable, PresenceBar, StatusBadge

    renderers = set(re.findall(r'\["(\w+)", \w+\]', (SRC / "widgets.js").read_text()))
    kinds = {
        cls.class_traits()["_kind"].default_value
        for cls in (LiveChart, LiveTable, StatusBadge, PresenceBar, HubMonitor)
    }
    assert kinds == renderers == {"chart", "table", "status", "presence", "monitor"}
