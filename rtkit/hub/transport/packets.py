"""Hub-to-client packets, encoded once for any number of recipients.

python-socketio encodes an emit again for every recipient. Here one event is
encoded into one Engine.IO packet (and, for direct writes, one websocket
frame) that is handed to every connection it goes to. The text is the
Socket.IO v5 wire format itself (``4`` Engine.IO MESSAGE, ``2`` Socket.IO
EVENT, the namespace, the JSON arguments); tests/contract checks that it is
byte for byte what python-socketio would send.
"""

from __future__ import annotations

from typing import Any

import orjson
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from ...protocol import MESSAGES, NAMESPACE, Message

# '4' Engine.IO MESSAGE, '2' Socket.IO EVENT, then the namespace.
EVENT_PREFIX = f"42{NAMESPACE},"
_MESSAGES_PREFIX = f'{EVENT_PREFIX}["{MESSAGES}",['
_MESSAGES_SUFFIX = "]]"


class EncodedPacket(eio_packet.Packet):  # type: ignore[misc]
    """An Engine.IO text MESSAGE packet encoded once and sent to many sockets.

    ``encoded`` is the whole Engine.IO packet, type digit included.
    """

    def __init__(self, encoded: str) -> None:
        super().__init__(eio_packet.MESSAGE, encoded[1:])
        self._encoded = encoded
        self._frame: bytes | None = None

    def encode(self, b64: bool = False) -> str:
        return self._encoded

    @property
    def frame(self) -> bytes:
        """The packet as one websocket text frame, built once."""
        if self._frame is None:
            self._frame = websocket_text_frame(self._encoded.encode())
        return self._frame


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, final RFC 6455 text frame. Server-to-client frames carry
    no mask, so every recipient can be sent the very same bytes."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def message_frame(socketio_packet: str) -> bytes:
    """The websocket frame of an encoded Socket.IO text packet (an ack, say)
    carried in an Engine.IO MESSAGE."""
    return websocket_text_frame(("4" + socketio_packet).encode())


def _with_attachments(event: str, payload: Any) -> list[Any]:
    # Binary payloads travel as Socket.IO attachments; python-socketio builds
    # those (rare path, still encoded once for every recipient).
    pkt = sio_packet.Packet(sio_packet.EVENT, namespace=NAMESPACE, data=[event, payload])
    encoded = pkt.encode()
    parts = encoded if isinstance(encoded, list) else [encoded]
    return [eio_packet.Packet(eio_packet.MESSAGE, p) for p in parts]


def encode_event(event: str, payload: Any) -> list[Any]:
    """The Engine.IO packets of one hub-to-client event, encoded once to be
    sent to many connections. Bytes anywhere in ``payload`` travel as
    Socket.IO binary attachments."""
    try:
        body = orjson.dumps([event, payload]).decode()
    except TypeError:
        # orjson refuses bytes: this is the binary case.
        return _with_attachments(event, payload)
    return [EncodedPacket(EVENT_PREFIX + body)]


def encode_messages(batch: list[Message]) -> list[Any]:
    """The Engine.IO packets of one ``messages`` event carrying ``batch``."""
    if not any(isinstance(m.data, bytes | bytearray) for m in batch):
        body = b",".join(orjson.dumps(m.envelope()) for m in batch).decode()
        return [EncodedPacket(_MESSAGES_PREFIX + body + _MESSAGES_SUFFIX)]
    return _with_attachments(MESSAGES, [m.envelope() for m in batch])
