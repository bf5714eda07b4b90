"""``rtkit top``: a hub's live figures in the terminal, refreshed in place.

It reads the status API once per interval: ``{url}/api/status`` on a
standalone hub (with its API key, ``rtkit hub --api-key``) and
``{base_url}rtkit/api/status`` inside Jupyter (with the Jupyter token). It
shows channels by message rate, connections by user, the connections that
are falling behind and the store's state. ``--once`` prints one screen and
exits (for scripts, and to paste into an issue).

Only the standard library: it must run wherever the hub's operator is.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from .errors import ConfigurationError, NotConnected, Unauthorized

__all__ = ["fetch_status", "render", "run_top"]

# Escape sequences: the alternate screen (restored on exit, as htop does),
# cursor home and clear.
_ENTER, _LEAVE, _HOME_CLEAR = "\x1b[?1049h", "\x1b[?1049l", "\x1b[H\x1b[2J"


def status_url(url: str) -> str:
    """The status API of the hub at ``url`` (a hub URL, or Jupyter's
    ``.../rtkit``)."""
    base = url.split("?", 1)[0].rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigurationError(f"the hub URL must start with http:// or https://: {url!r}")
    return f"{base}/api/status"


def fetch_status(
    url: str, *, api_key: str | None = None, token: str | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    """One status snapshot, as the status API returns it."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    if token:
        # Jupyter's own scheme; the standalone hub's status takes the API key.
        headers["Authorization"] = f"token {token}"
    target = status_url(url)
    request = urllib.request.Request(target, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body: dict[str, Any] = json.load(answer)
            return body
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise Unauthorized(
                f"{target} answered {exc.code}: pass the hub's API key (--api-key, "
                "env RTKIT_API_KEY) or, inside Jupyter, the Jupyter token (--token)"
            ) from None
        if exc.code == 404:
            raise ConfigurationError(
                f"{target} answered 404: is {url} an rtkit hub (inside Jupyter: "
                "the server's URL followed by /rtkit)?"
            ) from None
        raise NotConnected(f"{target} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotConnected(f"cannot reach the hub at {target}: {reason}") from None


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value < 10_000 else f"{value:,.0f}"


def _ago(when: float | None, now: float) -> str:
    if not when:
        return "-"
    seconds = max(0.0, now - when)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def render(status: Mapping[str, Any], *, url: str, width: int = 100, height: int = 40) -> str:
    """One screen of ``rtkit top`` for a status snapshot."""
    now = time.time()
    lines: list[str] = []
    clock = datetime.now(UTC).strftime("%H:%M:%S")
    lines.append(
        f"rtkit top  {url}  {status.get('state', '?')}  store {status.get('store', '?')}  "
        f"up {_uptime(float(status.get('uptime', 0)))}  {clock} UTC"
    )
    channels: dict[str, dict[str, Any]] = status.get("channels", {})
    total_rate = sum(float(c.get("rate", 0)) for c in channels.values())
    slow = status.get("slow_consumers", {"queued": [], "disconnected": 0})
    lines.append(
        f"connections {status.get('connections', 0):,}  users {status.get('users', 0):,}  "
        f"channels {len(channels):,}  messages/s {_rate(total_rate)}  "
        f"behind now {len(slow['queued'])}  slow disconnects {slow['disconnected']:,}"
    )
    cluster = status.get("cluster")
    if cluster is not None:
        lines.append("cluster " + "  ".join(f"{k} {v}" for k, v in sorted(cluster.items())))
    hooks = status.get("webhooks")
    if hooks:
        lines.append(
            f"webhooks sent {hooks.get('sent', 0):,}  queued {hooks.get('queued', 0):,}  "
            f"failed attempts {hooks.get('failed_attempts', 0):,}  "
            f"dropped {hooks.get('dropped', 0):,}"
            + (f"  last error: {hooks['last_error']}" if hooks.get("last_error") else "")
        )
    lines.append("")

    users: dict[str, int] = status.get("connections_by_user", {})
    shown_users = list(users.items())[:5]
    shown_slow = slow["queued"][:5]
    # What is left for channels once the fixed parts are drawn.
    shown_bridges = min(len(status.get("bridges") or {}), 8)
    room = max(3, height - len(lines) - 8 - len(shown_users) - len(shown_slow) - shown_bridges)
    name_width = max(12, min(40, width - 58))
    lines.append(
        f"{'CHANNEL':<{name_width}} {'MSG/S':>9} {'KB/S':>8} {'SUBS':>6} {'PUBS':>5} "
        f"{'SEQ':>11} {'LAST':>5}"
    )
    ranked = sorted(
        channels.items(),
        key=lambda item: (-float(item[1].get("rate", 0)), -int(item[1].get("subscribers", 0))),
    )
    for name, c in ranked[:room]:
        shown = name if len(name) <= name_width else name[: name_width - 1] + "~"
        lines.append(
            f"{shown:<{name_width}} {_rate(float(c.get('rate', 0))):>9} "
            f"{float(c.get('bytes_rate', 0)) / 1024:>8.1f} {c.get('subscribers', 0):>6} "
            f"{c.get('publishers', 0):>5} {c.get('seq', 0):>11,} "
            f"{_ago(c.get('last_activity'), now):>5}"
        )
    if len(ranked) > room:
        lines.append(f"... and {len(ranked) - room} more channels")
    lines.append("")
    lines.append(f"{'USER':<{name_width}} {'CONNECTIONS':>11}")
    for user, count in shown_users:
        lines.append(f"{user:<{name_width}} {count:>11,}")
    bridges: dict[str, dict[str, Any]] = status.get("bridges") or {}
    if bridges:
        lines.append("")
        lines.append(f"{'BRIDGE':<{name_width}} {'STATE':<12} {'LAG':>8} {'ERRORS':>6}  POSITION")
        for name, b in sorted(bridges.items())[:8]:
            lag = b.get("lag")
            lines.append(
                f"{name:<{name_width}} {b.get('status', '?'):<12} "
                f"{'-' if lag is None else lag:>8} {b.get('errors', 0):>6}  "
                f"{b.get('last_position') or '-'}"
            )
    if shown_slow:
        lines.append("")
        lines.append(f"{'FALLING BEHIND':<{name_width}} {'USER':<16} {'PACKETS':>8} {'KB':>8}")
        for entry in shown_slow:
            lines.append(
                f"{entry['sid']:<{name_width}} {entry['user']:<16} {entry['packets']:>8} "
                f"{entry['bytes'] / 1024:>8.1f}"
            )
    return "\n".join(line[:width] for line in lines)


def run_top(
    url: str,
    *,
    api_key: str | None = None,
    token: str | None = None,
    interval: float = 1.0,
    once: bool = False,
    out: TextIO = sys.stdout,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Draw the hub's figures every ``interval`` seconds until Ctrl-C (or
    ``iterations`` screens); ``once``: print one screen, no escapes."""
    if once:
        size = shutil.get_terminal_size((120, 40))
        status = fetch_status(url, api_key=api_key, token=token)
        print(render(status, url=url, width=size.columns, height=size.lines), file=out)
        return 0
    interactive = out.isatty()
    if interactive:
        out.write(_ENTER)
    try:
        drawn = 0
        while iterations is None or drawn < iterations:
            size = shutil.get_terminal_size((120, 40))
            try:
                screen = render(
                    fetch_status(url, api_key=api_key, token=token),
                    url=url,
                    width=size.columns,
                    height=size.lines,
                )
            except NotConnected as exc:
                # The hub restarting is something to watch, not a reason to quit.
                screen = f"rtkit top  {url}\n\n{exc}\n(retrying every {interval:g} s)"
            out.write((_HOME_CLEAR if interactive else "") + screen + "\n")
            out.flush()
            drawn += 1
            if iterations is None or drawn < iterations:
                sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        if interactive:
            out.write(_LEAVE)
            out.flush()
    return 0
