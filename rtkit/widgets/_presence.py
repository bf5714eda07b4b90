"""The presence bar; see :mod:`rtkit.widgets`."""

from __future__ import annotations

import logging
from typing import Any

import traitlets

from ..client import sync
from ..protocol import Member, validate_name
from ._base import _HubWidget

log = logging.getLogger(__name__)


class _PresenceRelay:
    """Kernel-side fallback: the kernel joins the room and sends the member
    list through the comm after each change. The hub already coalesces
    join/leave storms, so each of its events costs at most one comm message."""

    def __init__(self, widget: PresenceBar, client: sync.Client) -> None:
        self.widget = widget
        self.stopped = False
        # A room this client had joined already belongs to the caller:
        # stopping the relay must not make them leave it.
        self.owned = not client._runner.call(lambda: widget.room in client.aio._rooms)
        self.room = client.presence(widget.room, dict(widget.state))
        for event in ("join", "leave", "update"):
            self.room.on(event, self._changed)
        widget.observe(self._state_changed, names="state")
        # Member lists are built and sent only on the client's I/O thread,
        # where the room's events arrive: one at a time, in order, and
        # without a lock that a thread waiting on the I/O thread could hold.
        client._runner.call(self._changed)

    def _changed(self, _member: Member | None = None) -> None:
        if self.stopped:
            return
        me = self.room.me
        content = {
            "type": "members",
            "members": [m.to_wire() for m in self.room.members],
            "me": me.id if me is not None else None,
        }
        try:
            self.widget.send(content)
        except Exception:  # the comm closed under us
            log.debug("rtkit: presence relay could not send", exc_info=True)

    def _state_changed(self, change: dict[str, Any]) -> None:
        self.room.update(dict(change["new"]))

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.widget.unobserve(self._state_changed, names="state")
        for event in ("join", "leave", "update"):
            self.room.off(event, self._changed)
        if self.owned:
            try:
                self.room.leave()
            except Exception:  # offline or closed: the hub drops us anyway
                log.debug("rtkit: presence relay could not leave", exc_info=True)


class PresenceBar(_HubWidget):
    """Who is in a presence room: avatars with initials and colors, names
    and connection counts on hover, updated live as people join and leave.

    Inside JupyterLab the page joins the room itself, as the user logged in
    to Jupyter, so everyone who has the notebook open shows up; ``state``
    (an object) is this page's member state, e.g. ``{"status": "reviewing"}``.
    Where the browser cannot reach the hub, the kernel joins for it.

    >>> PresenceBar("analysis")
    >>> PresenceBar("analysis", state={"status": "reviewing"}, max_avatars=8)
    """

    _kind = traitlets.Unicode("presence").tag(sync=True)
    _channel_optional = True  # a room, not a channel
    room = traitlets.Unicode("").tag(sync=True)
    state = traitlets.Dict().tag(sync=True)
    max_avatars = traitlets.Int(12).tag(sync=True)

    def __init__(
        self,
        room: str,
        *,
        state: dict[str, Any] | None = None,
        hub: sync.Client | None = None,
        max_avatars: int = 12,
        **kwargs: Any,
    ) -> None:
        validate_name(room, "room", "PresenceBar")
        if max_avatars < 1:
            raise ValueError("max_avatars must be at least 1")
        super().__init__(
            "", hub=hub, room=room, state=dict(state or {}), max_avatars=max_avatars, **kwargs
        )

    def _start_relay(self) -> _PresenceRelay:
        return _PresenceRelay(self, self._kernel_hub())
