"""The public surface is a promise: these tests fail when it drifts."""

from __future__ import annotations

import subprocess
import sys

import rtkit
import rtkit.aio

PUBLIC = {
    "AckTimeout", "BadRequest", "Channel", "Client", "ClientClosed", "ClientMetrics",
    "ConfigurationError", "Forbidden", "GapInfo", "HubError", "InternalError", "Member", "Message",
    "NotConnected", "NotFound", "OfflineQueueFull", "Presence", "RateLimited", "RecordingError",
    "RtkitError", "SharedChange", "SharedDoc", "TokenUnavailable", "TooLarge", "Unauthorized",
    "Unavailable", "UnsupportedData", "__version__", "connect", "replay",
}  # fmt: skip


def test_rtkit_exports_exactly_the_public_names() -> None:
    assert set(rtkit.__all__) == PUBLIC
    for name in rtkit.__all__:
        assert getattr(rtkit, name) is not None, name


def test_async_twin_has_the_same_client_names() -> None:
    for name in (
        "Channel", "Client", "ClientMetrics", "GapInfo", "Member", "Message", "Presence",
        "SharedChange", "SharedDoc", "connect", "replay",
    ):  # fmt: skip
        assert hasattr(rtkit.aio, name), name
    assert rtkit.aio.Presence is not rtkit.Presence  # the blocking twin wraps the async one
    assert rtkit.aio.SharedDoc is not rtkit.SharedDoc
    assert rtkit.aio.connect is not rtkit.connect
    assert rtkit.aio.replay is not rtkit.replay


def test_import_rtkit_stays_light() -> None:
    code = (
        "import sys, rtkit; "
        "heavy = [m for m in ('socketio', 'aiohttp', 'pandas', 'redis', 'ipywidgets', 'pycrdt') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_widgets_export_the_notebook_names() -> None:
    import rtkit.widgets

    assert set(rtkit.widgets.__all__) == {
        "HubMonitor", "Link", "LiveChart", "LiveTable", "PresenceBar", "StatusBadge", "link",
    }  # fmt: skip
    for name in rtkit.widgets.__all__:
        assert getattr(rtkit.widgets, name).__module__.startswith("rtkit.widgets._"), name
    assert callable(rtkit.widgets.link)
