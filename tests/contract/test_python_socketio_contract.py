"""What rtkit.hub.transport.server and .packets rely on in python-socketio."""

from __future__ import annotations

import inspect

import orjson
import socketio
from socketio import packet as sio_packet

from rtkit.errors import Forbidden
from rtkit.hub.transport import encode_event
from rtkit.hub.transport.server import (
    UNDECODABLE,
    ConnectionRefused,
    FastHubServer,
    HubServer,
    OrjsonForSocketIO,
    UndecodablePacket,
    create_server,
)
from rtkit.protocol import NAMESPACE

SERVER = "rtkit.hub.transport.server"
PACKETS = "rtkit.hub.transport.packets"


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_overridden_private_methods_keep_their_signatures() -> None:
    expected = {
        "_handle_event": ["self", "eio_sid", "namespace", "id", "data"],
        "_handle_event_internal": ["self", "server", "sid", "eio_sid", "data", "namespace", "id"],
        "_handle_eio_disconnect": ["self", "eio_sid", "reason"],
        "_send_packet": ["self", "eio_sid", "pkt"],
    }
    for name, parameters in expected.items():
        method = getattr(socketio.AsyncServer, name, None)
        assert method is not None, f"socketio.AsyncServer.{name} is gone: {SERVER} overrides it"
        assert inspect.iscoroutinefunction(method), f"{name} is no longer async ({SERVER})"
        assert _parameters(method) == parameters, (
            f"socketio.AsyncServer.{name}{inspect.signature(method)} changed: "
            f"re-check FastHubServer.{name} in {SERVER}"
        )


def test_event_handling_goes_through_the_overridden_methods() -> None:
    # FastHubServer counts a request's task in _handle_event and uncounts it
    # in _handle_event_internal, so python-socketio must run every handler
    # through _handle_event_internal, and send acks through _send_packet.
    handle_event = inspect.getsource(socketio.AsyncServer._handle_event)
    assert "self._handle_event_internal" in handle_event, (
        f"_handle_event no longer runs handlers through _handle_event_internal ({SERVER})"
    )
    assert "self.async_handlers" in handle_event, (
        f"_handle_event no longer decides on async_handlers ({SERVER})"
    )
    internal = inspect.getsource(socketio.AsyncServer._handle_event_internal)
    assert "server._send_packet(" in internal, (
        f"acks no longer leave through _send_packet ({SERVER})"
    )
    disconnect = inspect.getsource(socketio.AsyncServer._handle_eio_disconnect)
    assert "_handle_disconnect" in disconnect, (
        f"_handle_eio_disconnect no longer disconnects the namespaces ({SERVER})"
    )


async def test_a_server_takes_the_hub_classes_and_exposes_what_the_hub_uses() -> None:
    for fast_paths in (True, False):
        server = create_server(fast_paths=fast_paths, async_mode="aiohttp")
        assert type(server) is (FastHubServer if fast_paths else HubServer)
        assert issubclass(server.packet_class, UndecodablePacket), (
            f"serializer= no longer sets packet_class ({SERVER})"
        )
        assert UndecodablePacket.json is OrjsonForSocketIO, (
            f"json= no longer sets the packet class's json ({SERVER})"
        )
        assert isinstance(server.async_handlers, bool), f"AsyncServer.async_handlers ({SERVER})"
        manager = server.manager
        for name in ("sid_from_eio_sid", "eio_sid_from_sid", "is_connected"):
            assert callable(getattr(manager, name, None)), (
                f"the client manager has no {name} (rtkit.hub.core, {SERVER})"
            )
        assert server.eio.async_handlers is False, (
            f"Engine.IO handlers run in its reader, not in tasks ({SERVER})"
        )


def test_decode_parses_type_namespace_and_id_before_the_arguments() -> None:
    create_server(fast_paths=False, async_mode="aiohttp")  # sets the packet's json
    pkt = UndecodablePacket(encoded_packet=f'2{NAMESPACE},7["publish",{{"data":NaN}}]')
    assert pkt.packet_type == sio_packet.EVENT, f"packet type not parsed first ({SERVER})"
    assert pkt.namespace == NAMESPACE and pkt.id == 7, f"namespace/id not parsed first ({SERVER})"
    assert pkt.data[0] == UNDECODABLE, f"the JSON error no longer surfaces from decode ({SERVER})"
    connect = UndecodablePacket(encoded_packet=f"0{NAMESPACE},{{}}")
    connect_data: object = connect.data
    assert connect.packet_type == sio_packet.CONNECT and connect_data == {}


def test_a_refused_connect_sends_error_args() -> None:
    refused = ConnectionRefused(Forbidden("too many connections"))
    assert refused.error_args == {
        "code": "forbidden",
        "message": "too many connections",
        "data": {"code": "forbidden", "message": "too many connections"},
    }
    connect = inspect.getsource(socketio.AsyncServer._handle_connect)
    assert "exc.error_args" in connect, (
        f"a ConnectionRefusedError's error_args is no longer the connect error's payload "
        f"({SERVER}.ConnectionRefused)"
    )


def test_hand_built_events_are_what_python_socketio_encodes() -> None:
    payload = {"room": "r", "event": "join", "member": {"id": "m", "n": 1.5, "ok": True}}
    (ours,) = encode_event("presence", payload)
    stock = sio_packet.Packet(sio_packet.EVENT, namespace=NAMESPACE, data=["presence", payload])
    encoded = stock.encode()
    assert isinstance(encoded, str)
    assert ours.encode() == "4" + encoded, f"the Socket.IO event prefix changed ({PACKETS})"
    assert orjson.loads(ours.encode()[len(f"42{NAMESPACE},") :]) == ["presence", payload]


def test_the_client_decodes_with_its_own_packet_class_and_json(monkeypatch: object) -> None:
    # rtkit.client._session relies on AsyncClient(serializer=<Packet subclass>)
    # making that class the client's packet class, and on Packet.decode
    # reading the arguments with the class's ``json.loads``: every delivery
    # a Python subscriber receives is decoded there, by orjson.
    from rtkit.client._session import SocketIOTransport, _Packet, _WireJSON

    transport = SocketIOTransport(connect_timeout=1.0)
    assert transport._sio.packet_class is _Packet
    assert sio_packet.Packet.json is not _WireJSON  # no global change
    calls: list[object] = []
    real = _WireJSON.loads

    def counting(data: str | bytes, **kwargs: object) -> object:
        calls.append(data)
        return real(data)

    monkeypatch.setattr(_WireJSON, "loads", staticmethod(counting))  # type: ignore[attr-defined]
    pkt = _Packet(encoded_packet=f'2{NAMESPACE},["messages",[{{"channel":"c","seq":1}}]]')
    assert pkt.data == ["messages", [{"channel": "c", "seq": 1}]]
    assert len(calls) == 1
    # What the client sends is encoded as before, by the standard library.
    assert _Packet(
        sio_packet.EVENT, data=["publish", {"x": 1.5}], namespace=NAMESPACE
    ).encode() == (f'2{NAMESPACE},["publish",{{"x":1.5}}]')
