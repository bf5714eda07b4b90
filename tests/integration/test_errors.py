"""Every error code, reached by a real bad request against a real hub.

Each test keeps a well-behaved ``Bystander`` client publishing and receiving
on the same hub while the bad requests happen, and checks that it never
noticed: a bad request never disconnects its client and never disturbs others
(DESIGN.md, wire protocol v1).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
import socketio

from rtkit.hub.auth import mint_token
from rtkit.pytest_plugin import InProcessHub

from .conftest import SECRET, Connect, token
from .helpers import NS, Bystander, RawClient, assert_error, assert_ok

CAP = 256 * 1024  # the default max payload


def _channel(prefix: str = "err") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


async def _still_served(client: RawClient) -> None:
    """The client is connected and its requests still work."""
    assert client.connected, f"{client.name} was disconnected: {client.disconnect_reasons}"
    channel = _channel("alive")
    assert_ok(await client.subscribe(channel))
    ack = assert_ok(await client.publish(channel, {"alive": True}))
    await client.wait_for_seq(channel, ack["seq"])
    assert_ok(await client.unsubscribe(channel))


# -- bad_request ------------------------------------------------------------

_OK = {"channel": "ok"}

BAD_REQUESTS = [
    pytest.param("publish", ("not an object",), id="payload-string"),
    pytest.param("publish", ([1, 2],), id="payload-array"),
    pytest.param("publish", (None,), id="payload-null"),
    pytest.param("publish", (42,), id="payload-number"),
    pytest.param("subscribe", (True,), id="payload-bool"),
    pytest.param("publish", ({"channel": 123, "data": 1},), id="channel-int"),
    pytest.param("publish", ({"channel": None, "data": 1},), id="channel-null"),
    pytest.param("publish", ({"channel": ["a"], "data": 1},), id="channel-array"),
    pytest.param("publish", ({"data": 1},), id="channel-missing"),
    pytest.param("publish", ({"channel": "a b", "data": 1},), id="channel-space"),
    pytest.param("publish", ({"channel": "*", "data": 1},), id="channel-star"),
    pytest.param("subscribe", ({"channel": "prices.*"},), id="channel-glob"),
    pytest.param("subscribe", ({"channel": ""},), id="channel-empty"),
    pytest.param("subscribe", ({"channel": ".hidden"},), id="channel-leading-dot"),
    pytest.param("subscribe", ({"channel": "x" * 201},), id="channel-too-long"),
    pytest.param("subscribe", ({"channel": "tab\there"},), id="channel-control-char"),
    pytest.param("history", ({"channel": "préférences"},), id="channel-non-ascii"),
    pytest.param("publish", ({"channel": "ok"},), id="data-missing"),
    pytest.param("publish", ({**_OK, "data": 1, "extra": 1},), id="publish-unknown-field"),
    pytest.param("subscribe", ({**_OK, "since": 0, "foo": 1},), id="subscribe-unknown-field"),
    pytest.param("history", ({**_OK, "page": 2},), id="history-unknown-field"),
    pytest.param("unsubscribe", ({**_OK, "since": 1},), id="unsubscribe-unknown-field"),
    pytest.param("publish", ({**_OK, "data": 1, "id": ""},), id="id-empty"),
    pytest.param("publish", ({**_OK, "data": 1, "id": 7},), id="id-int"),
    pytest.param("publish", ({**_OK, "data": 1, "id": "i" * 129},), id="id-too-long"),
    pytest.param("subscribe", ({**_OK, "since": "x"},), id="since-string"),
    pytest.param("subscribe", ({**_OK, "since": 1.5},), id="since-float"),
    pytest.param("subscribe", ({**_OK, "since": -1},), id="since-negative"),
    pytest.param("subscribe", ({**_OK, "since": True},), id="since-bool"),
    pytest.param("subscribe", ({**_OK, "history": "3"},), id="history-string"),
    pytest.param("subscribe", ({**_OK, "history": 10_001},), id="history-too-many"),
    pytest.param("subscribe", ({**_OK, "since": 1, "history": 1},), id="since-and-history"),
    pytest.param("subscribe", ({**_OK, "epoch": 5},), id="epoch-int"),
    pytest.param("history", ({**_OK, "limit": 0},), id="limit-zero"),
    pytest.param("history", ({**_OK, "limit": 10_001},), id="limit-too-big"),
    pytest.param("history", ({**_OK, "before": 0},), id="before-zero"),
    pytest.param("history", ({**_OK, "since": []},), id="history-since-array"),
    pytest.param("nope", ({},), id="unknown-event"),
    pytest.param("presence.bogus", ({},), id="unknown-dotted-event"),
    pytest.param("publish", (), id="no-argument"),
    pytest.param("publish", ({**_OK, "data": 1}, {**_OK, "data": 2}), id="two-arguments"),
    pytest.param("subscribe", (_OK, "extra"), id="extra-argument"),
]


@pytest.mark.parametrize(("event", "args"), BAD_REQUESTS)
async def test_bad_request(
    shared_hub: InProcessHub, connect: Connect, event: str, args: tuple[Any, ...]
) -> None:
    async with Bystander(shared_hub.url) as bystander:
        bad = await connect(shared_hub.url)
        message = assert_error(await bad.call(event, *args), "bad_request")
        assert len(message) < 500
        await bystander.round_trip()
        await _still_served(bad)
        # Nothing was published by the bad request.
        if event == "publish" and args and isinstance(args[0], dict):
            channel = args[0].get("channel")
            if isinstance(channel, str) and channel == "ok":
                history = assert_ok(await bad.history("ok"))
                assert history["messages"] == []
    assert shared_hub.running


async def test_nan_is_a_bad_request(shared_hub: InProcessHub, connect: Connect) -> None:
    """Python's json module writes NaN and Infinity, which are not JSON: the
    hub must answer such a request (bad_request), not drop it unanswered."""
    channel = _channel("nan")
    async with Bystander(shared_hub.url):
        bad = await connect(shared_hub.url)
        for value in (float("nan"), float("inf"), {"x": [1, float("-inf")]}):
            ack = await bad.call("publish", {"channel": channel, "data": value}, within=5)
            assert_error(ack, "bad_request")
        ack = await bad.call("subscribe", {"channel": channel, "since": float("nan")})
        assert_error(ack, "bad_request")
        await _still_served(bad)
        assert assert_ok(await bad.history(channel))["messages"] == []


# -- not_found --------------------------------------------------------------


async def test_not_found(shared_hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("nf")
    async with Bystander(shared_hub.url):
        client = await connect(shared_hub.url)
        assert_error(await client.unsubscribe(channel), "not_found")
        assert_ok(await client.subscribe(channel))
        assert_ok(await client.unsubscribe(channel))
        assert_error(await client.unsubscribe(channel), "not_found")
        # Another connection's subscription is not this one's.
        other = await connect(shared_hub.url)
        assert_ok(await other.subscribe(channel))
        assert_error(await client.unsubscribe(channel), "not_found")
        await _still_served(client)
        await _still_served(other)


# -- too_large --------------------------------------------------------------


async def test_too_large(shared_hub: InProcessHub, connect: Connect) -> None:
    channel = _channel("big")
    async with Bystander(shared_hub.url) as bystander:
        sub = await connect(shared_hub.url)
        assert_ok(await sub.subscribe(channel))
        pub = await connect(shared_hub.url)
        # Exactly at the cap (the JSON encoding of the data) is fine.
        at_cap = "x" * (CAP - 2)
        assert assert_ok(await pub.publish(channel, at_cap))["seq"] == 1
        for data in (
            "x" * (CAP - 1),  # one byte over
            {"blob": "y" * 500_000},
            "z" * 990_000,  # just under the transport's 1 MB frame limit
            b"\x00" * (CAP + 1),  # binary, sent as an attachment
        ):
            message = assert_error(await pub.publish(channel, data), "too_large")
            assert str(CAP) in message, message
            assert pub.connected
            await bystander.round_trip()
        assert assert_ok(await pub.publish(channel, b"\x01" * CAP))["seq"] == 2
        assert assert_ok(await pub.publish(channel, "small"))["seq"] == 3
        await sub.wait_for_seq(channel, 3)
        assert sub.seqs(channel) == [1, 2, 3], "a refused publish reached subscribers"
        assert sub.received[channel][0]["data"] == at_cap
        await _still_served(pub)


async def test_oversized_frame_drops_only_that_connection(
    shared_hub: InProcessHub, connect: Connect
) -> None:
    """A frame over the transport's 1 MB limit cannot be answered: it closes
    that one connection, and everything else carries on."""
    channel = _channel("frame")
    async with Bystander(shared_hub.url) as bystander:
        watcher = await connect(shared_hub.url)
        assert_ok(await watcher.subscribe(channel))
        huge = await connect(shared_hub.url)
        await huge.sio.emit("publish", {"channel": channel, "data": "h" * 1_100_000}, namespace=NS)
        await huge.wait_disconnected()
        await bystander.round_trip()
        assert watcher.connected
        fresh = await connect(shared_hub.url)
        assert_ok(await fresh.publish(channel, "after"))
        await watcher.wait_for_seq(channel, 1)
        assert watcher.seqs(channel) == [1], "the oversized publish must not be stored"
        await _still_served(watcher)
    assert shared_hub.running


# -- rate_limited -----------------------------------------------------------


async def test_rate_limited(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    hub = rt_hub_inprocess_factory(extra_args=["--publish-rate", "50", "--publish-burst", "10"])
    channel = _channel("flood")
    # The bystander stays under the rate: 20 publishes/s at most.
    async with Bystander(hub.url, interval=0.05) as bystander:
        sub = await connect(hub.url)
        assert_ok(await sub.subscribe(channel))
        flooder = await connect(hub.url)
        started = time.monotonic()
        acks = await asyncio.gather(*(flooder.publish(channel, {"i": i}) for i in range(100)))
        elapsed = time.monotonic() - started
        accepted = [(i, a) for i, a in enumerate(acks) if a.get("ok")]
        refused = [a for a in acks if not a.get("ok")]
        for ack in refused:
            message = assert_error(ack, "rate_limited")
            assert "retry" in message
        assert len(accepted) >= 10, "the burst must be allowed"
        assert len(accepted) <= 10 + 50 * elapsed + 2, f"{len(accepted)} accepted in {elapsed}s"
        assert refused, "100 publishes at once must exceed a burst of 10"

        # Every accepted publish is delivered, in order, and nothing else.
        seqs = [a["seq"] for _, a in accepted]
        assert seqs == list(range(1, len(accepted) + 1))
        await sub.wait_for_seq(channel, seqs[-1])
        assert sub.seqs(channel) == seqs
        assert [e["data"]["i"] for e in sub.received[channel]] == [i for i, _ in accepted]
        history = assert_ok(await sub.history(channel))
        assert [m["seq"] for m in history["messages"]] == seqs

        # The bucket refills: the flooder may publish again.
        results: list[dict[str, Any]] = []

        async def publish_once() -> bool:
            results.append(await flooder.publish(channel, "again"))
            return bool(results[-1].get("ok"))

        deadline = time.monotonic() + 5
        while not await publish_once():
            assert time.monotonic() < deadline, "the rate limit never lifted"
            await asyncio.sleep(0.02)
        assert results[-1]["seq"] == seqs[-1] + 1
        await bystander.round_trip()
        assert flooder.connected
    assert hub.running


# -- forbidden --------------------------------------------------------------


async def test_forbidden_by_token_patterns(secret_hub: InProcessHub, connect: Connect) -> None:
    async with Bystander(secret_hub.url, token=token("bob")):
        carol = await connect(
            secret_hub.url,
            token=token("carol", publish=["allowed.*"], subscribe=["allowed.*", "public"]),
        )
        assert_error(await carol.publish("other", 1), "forbidden")
        assert_error(await carol.publish("public", 1), "forbidden")
        assert_error(await carol.publish("allowed", 1), "forbidden")  # "allowed.*" needs a dot
        assert_error(await carol.subscribe("other"), "forbidden")
        assert_error(await carol.history("other"), "forbidden")
        assert_error(await carol.subscribe("other", since=0), "forbidden")

        channel = f"allowed.{uuid.uuid4().hex[:6]}"
        assert_ok(await carol.subscribe(channel))
        assert_ok(await carol.subscribe("public"))
        ack = assert_ok(await carol.publish(channel, {"by": "carol"}))
        await carol.wait_for_seq(channel, ack["seq"])
        assert carol.received[channel][-1]["sender"] == "carol"
        # A subscriber of 'public' sees what others publish there.
        dave = await connect(secret_hub.url, token=token("dave"))
        ack = assert_ok(await dave.publish("public", "hello"))
        await carol.wait_for_seq("public", ack["seq"])

        nobody = await connect(secret_hub.url, token=token("nobody", publish=[], subscribe=[]))
        assert_error(await nobody.publish(channel, 1), "forbidden")
        assert_error(await nobody.subscribe(channel), "forbidden")
        assert nobody.connected and carol.connected


async def test_subscription_cap(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    hub = rt_hub_inprocess_factory(extra_args=["--max-subscriptions", "3"])
    async with Bystander(hub.url):
        client = await connect(hub.url)
        names = [_channel(f"cap{i}") for i in range(4)]
        for name in names[:3]:
            assert_ok(await client.subscribe(name))
        message = assert_error(await client.subscribe(names[3]), "forbidden")
        assert "3" in message
        # Subscribing again to a channel already held is not a new one.
        assert_ok(await client.subscribe(names[0], since=0))
        assert_ok(await client.unsubscribe(names[0]))
        assert_ok(await client.subscribe(names[3]))
        assert_error(await client.subscribe(names[0]), "forbidden")
        # The cap is per connection.
        other = await connect(hub.url)
        for name in names[:3]:
            assert_ok(await other.subscribe(name))
        ack = assert_ok(await other.publish(names[1], "still delivered"))
        await client.wait_for_seq(names[1], ack["seq"])
        await other.wait_for_seq(names[1], ack["seq"])


# -- unauthorized -----------------------------------------------------------


def assert_connect_error(data: Any, code: str, case: str) -> str:
    """A refused connect's data, as python-socketio hands it over, is DESIGN's
    ``{"code", "message"}`` (a ``data`` copy for socket.io-client may ride along:
    test_js_client checks what JavaScript sees)."""
    assert isinstance(data, dict), (case, data)
    assert set(data) - {"data"} == {"code", "message"}, (case, data)
    assert data["code"] == code, (case, data)
    assert isinstance(data["message"], str) and data["message"], (case, data)
    if "data" in data:
        assert data["data"] == {"code": code, "message": data["message"]}, (case, data)
    message: str = data["message"]
    return message


def _forged_tokens() -> dict[str, dict[str, Any] | None]:
    now = time.time()
    claims = {"sub": "mallory", "exp": int(now) + 3600}
    return {
        "no auth": None,
        "empty auth": {},
        "token null": {"token": None},
        "token not a string": {"token": 12345},
        "garbage": {"token": "not-a-jwt"},
        "other secret": {
            "token": mint_token(
                "another-secret-0123456789abcdef-xyz", "mallory", publish=["*"], subscribe=["*"]
            )
        },
        "expired": {
            "token": mint_token(
                SECRET, "mallory", publish=["*"], subscribe=["*"], now=now - 100, ttl=10
            )
        },
        "alg none": {"token": jwt.encode(claims, key=None, algorithm="none")},
        "no sub": {"token": jwt.encode({"exp": int(now) + 60}, SECRET, algorithm="HS256")},
        "no exp": {"token": jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256")},
        "bad grants": {
            "token": jwt.encode({**claims, "rtkit": {"publish": 5}}, SECRET, algorithm="HS256")
        },
    }


async def test_unauthorized_connect(secret_hub: InProcessHub, connect: Connect) -> None:
    async with Bystander(secret_hub.url, token=token("bob")) as bystander:
        for case, auth in _forged_tokens().items():
            client = RawClient(secret_hub.url, auth=auth, name=case)
            try:
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await client.connect()
                assert not client.connected
                assert len(client.connect_errors) == 1, (case, client.connect_errors)
                assert_connect_error(client.connect_errors[0], "unauthorized", case)
            finally:
                await client.close()
            await bystander.round_trip()
        # The same hub still takes good tokens.
        good = await connect(secret_hub.url, token=token("alice"))
        await _still_served(good)


async def test_token_expiring_during_the_session(
    secret_hub: InProcessHub, connect: Connect
) -> None:
    """A token that expires while connected: the hub ends the connection at
    expiry and says why (the closing event); until then requests go through."""
    async with Bystander(secret_hub.url, token=token("bob")):
        # exp was 3 s ago: still inside the hub's leeway at connect, past it
        # about 2 s later.
        short = token("erin", now=time.time() - 13, ttl=10)
        client = await connect(secret_hub.url, token=short)
        closing: list[Any] = []
        client.sio.on("closing", closing.append, namespace=NS)
        channel = _channel("exp")
        assert_ok(await client.subscribe(channel))
        await client.wait_disconnected(within=10)
        assert closing and closing[0]["code"] == "unauthorized"
        assert "expired" in closing[0]["message"]
        assert not client.connected


async def test_connections_per_user_cap(
    rt_hub_inprocess_factory: Callable[..., InProcessHub], connect: Connect
) -> None:
    hub = rt_hub_inprocess_factory(secret=SECRET, extra_args=["--max-connections-per-user", "2"])
    async with Bystander(hub.url, token=token("bob")) as bystander:
        first = await connect(hub.url, token=token("alice"))
        second = await connect(hub.url, token=token("alice"))
        third = RawClient(hub.url, token=token("alice"), name="third")
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await third.connect()
        finally:
            await third.close()
        assert len(third.connect_errors) == 1
        # Not an authentication failure: the token is fine, the user is at its cap.
        message = assert_connect_error(third.connect_errors[0], "forbidden", "third connection")
        assert "2" in message
        await bystander.round_trip()
        await _still_served(first)
        await _still_served(second)

        # Closing one frees a slot (once the hub has seen the disconnect).
        await first.close()
        retry: list[RawClient] = []

        async def try_connect() -> bool:
            client = RawClient(hub.url, token=token("alice"))
            try:
                await client.connect()
            except socketio.exceptions.ConnectionError:
                await client.close()
                return False
            retry.append(client)
            return True

        deadline = time.monotonic() + 10
        while not await try_connect():
            assert time.monotonic() < deadline, "the closed connection never freed its slot"
            await asyncio.sleep(0.05)
        try:
            await _still_served(retry[0])
        finally:
            await retry[0].close()


# -- malformed traffic ------------------------------------------------------


async def test_malformed_socketio_packets(shared_hub: InProcessHub, connect: Connect) -> None:
    """Garbage on a raw websocket does not crash the hub; Socket.IO-level
    garbage with an ack id gets a bad_request ack, and the connection keeps
    working; Engine.IO-level garbage drops only that connection."""
    url = f"ws://{shared_hub.host}:{shared_hub.port}/socket.io/?EIO=4&transport=websocket"
    channel = _channel("raw")
    async with Bystander(shared_hub.url) as bystander, aiohttp.ClientSession() as session:
        watcher = await connect(shared_hub.url)
        assert_ok(await watcher.subscribe(channel))
        async with session.ws_connect(url) as ws:
            opened = await asyncio.wait_for(ws.receive_str(), 10)
            assert opened.startswith("0{")
            await ws.send_str(f"40{NS},")
            connected = await asyncio.wait_for(ws.receive_str(), 10)
            assert connected.startswith(f"40{NS},")
            for garbage in (
                f"42{NS},0not json",
                f"42{NS},1[",
                f"42{NS},",
                f"42{NS},2[]",
                f"42{NS},{{}}",
                f"42{NS},3[null]",
                f'42{NS},4[5,{{"channel":"a"}}]',
                f'42{NS},5["publish",{{"channel":"{channel}","data":NaN}}]',
                f'42{NS},6["publish",{{"channel":"{channel}","data":1}},2]',
                "42/nope,7[]",
                f"49{NS},8[]",
                "4",
                "42",
                f"43{NS},99[]",
                f'42{NS},10["publish",{{"channel":"{channel}","data":"' + "A" * 300_000 + '"}]',
            ):
                await ws.send_str(garbage)
            await ws.send_bytes(b"\x00\xff\xfe binary garbage")
            await ws.send_str(f'42{NS},11["publish",{{"channel":"{channel}","data":"ok"}}]')
            acks: dict[int, Any] = {}
            while 11 not in acks:
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.TEXT, f"raw connection dropped: {msg}"
                if msg.data == "2":  # Engine.IO ping
                    await ws.send_str("3")
                    continue
                prefix = f"43{NS},"
                if msg.data.startswith(prefix):
                    body = msg.data[len(prefix) :]
                    digits = len(body) - len(body.lstrip("0123456789"))
                    acks[int(body[:digits])] = json.loads(body[digits:])[0]
            for ack_id in (3, 4, 5, 6):
                assert_error(acks.get(ack_id), "bad_request")
            assert_error(acks.get(10), "too_large")
            assert assert_ok(acks[11])["seq"] == 1
            await bystander.round_trip()
            # Engine.IO-level garbage: the hub may drop this connection, and only it.
            await ws.send_str("x garbage")
            await ws.send_str("6")
        await watcher.wait_for_seq(channel, 1)
        assert watcher.seqs(channel) == [1]
        await bystander.round_trip()
        await _still_served(watcher)
        fresh = await connect(shared_hub.url)
        await _still_served(fresh)
    assert shared_hub.running
