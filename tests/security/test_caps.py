"""Byte quotas, the shared-document size cap, safe presence names and colors,
and store URLs that never show their password (issue #15, items 8, 9, 10).

Every test runs real hub processes (or a real jupyter server), does what an
attacker's client does, checks that a bystander kept being served, and
checks the hub's resident memory against a stated bound. The bounds were
measured on the hub before and after the fix (see each test's comment).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pycrdt
import pytest

from rtkit.config import DEFAULT_LIMITS
from rtkit.hub.auth import TOKEN_ALGORITHM, color_for
from rtkit.pytest_plugin import REDIS_URL
from tests.integration.helpers import RawClient
from tests.security.attack import Bystander, rss_mb

pytestmark = [pytest.mark.slow]

SECRET = "caps-secret-" + "0123456789abcdef" * 2
ALL = {"publish": ["*"], "subscribe": ["*"]}
# The presence attack from the issue: a color that, pasted into cssText,
# turns an avatar into a fixed full-page overlay that fetches an outside URL.
EVIL_HOST = "evil.example"
INJECTION = (
    "red;position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:99999;"
    f"background:url(http://{EVIL_HOST}/pwned.png)"
)


def token(user: str, **claims: Any) -> str:
    """A token for ``user`` with every right; extra claims (name, color) as given."""
    now = int(time.time())
    body = {"sub": user, "iat": now, "exp": now + 3600, "rtkit": ALL, **claims}
    return jwt.encode(body, SECRET, algorithm=TOKEN_ALGORITHM)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL of each backend (Redis tests skip without a Redis)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    prefix = request.getfixturevalue("rt_redis_prefix")
    return f"{REDIS_URL}?prefix={prefix}"


def _start(factory: Any, store: str, *extra: str) -> Any:
    return factory(store=store, secret=SECRET, extra_args=list(extra))


# -- item 8: a byte quota per connection --------------------------------------

# The defaults (Limits.publish_bytes_rate and publish_bytes_burst).
QUOTA_RATE = 2 * 1024 * 1024
QUOTA_BURST = 8 * 1024 * 1024
PAYLOAD = 250_000  # bytes of data per publish, as in the issue
PUBLISHES = 240  # 60 MB offered, as fast as the hub acks
BATCH = 16  # publishes in flight at once


async def served(bystander: Bystander, at_least: int = 5, within: float = 10.0) -> None:
    """Wait until the bystander has had ``at_least`` publishes acked, so that
    its check covers the whole attack and a little after."""
    deadline = time.monotonic() + within
    while len(bystander.acked) < at_least and not bystander.errors:
        if time.monotonic() > deadline:
            break  # check() says what went wrong
        await asyncio.sleep(bystander.interval)


async def jupyter_client(server: Any, name: str, *, cookie: bool = False) -> RawClient:
    """A RawClient connected to the hub inside a jupyter server (its
    Socket.IO path, the Jupyter token on the HTTP request, and with
    ``cookie`` the login cookie too, as a browser would send)."""
    headers = {"Authorization": f"token {server.token}"}
    if cookie:
        headers["Cookie"] = server.cookie_header()
    client = RawClient(server.hub_url, name=name)
    client._disconnected = asyncio.Event()
    await client.sio.connect(
        f"http://127.0.0.1:{server.port}",
        socketio_path=f"{server.base_url.strip('/')}/rtkit/socket.io",
        namespaces=["/rtkit"],
        transports=["websocket"],
        headers=headers,
        wait_timeout=10,
    )
    return client


class JupyterBystander(Bystander):
    """A Bystander on the hub inside a jupyter server."""

    def __init__(self, server: Any) -> None:
        super().__init__(server.hub_url, token=server.token)
        self.server = server

    async def _client(self, name: str) -> RawClient:
        return await jupyter_client(self.server, name)

    async def __aenter__(self) -> JupyterBystander:
        self.publisher = await self._client("bystander-pub")
        self.subscriber = await self._client("bystander-sub")
        ack = await self.subscriber.subscribe(self.channel)
        assert ack["ok"], ack
        self._task = asyncio.create_task(self._run())
        return self


async def test_publishes_draw_on_a_byte_quota(rt_hub_factory: Any, store: str) -> None:
    hub = _start(rt_hub_factory, store)
    blob = "x" * (PAYLOAD - 2)  # a JSON string of PAYLOAD bytes
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        attacker = await RawClient(hub.url, token=token("mallory")).connect()
        acks: list[dict[str, Any]] = []
        started = time.monotonic()
        for first in range(0, PUBLISHES, BATCH):
            acks += await asyncio.gather(
                *(attacker.publish("flood", blob) for _ in range(first, first + BATCH))
            )
        elapsed = time.monotonic() - started
        grown = rss_mb(hub) - before
        await attacker.close()
        await served(bystander)
    bystander.check()

    accepted = [a for a in acks if a.get("ok")]
    refused = [a["error"] for a in acks if not a.get("ok")]
    print(f"byte quota {store}: {len(accepted)} accepted in {elapsed:.2f}s, RSS +{grown:.1f} MiB")
    # Unfixed: all 240 accepted (60 MB in 0.4-1.1 s). Fixed: the burst (8 MiB) and
    # the rate (2 MiB/s) over the attack's duration, plus one batch in flight.
    quota = QUOTA_BURST + QUOTA_RATE * elapsed
    assert len(accepted) * PAYLOAD <= quota + BATCH * PAYLOAD, (len(accepted), elapsed)
    assert refused and {e["code"] for e in refused} == {"rate_limited"}, refused[:3]
    assert "retry in" in refused[0]["message"] and "publish_bytes_rate" in refused[0]["message"]
    # Memory: the unfixed memory-store hub kept the 60 MB it was given (+59 MiB
    # RSS measured; +9-12 MiB on SQLite and Redis); the fixed one stores about
    # 36 publishes (+11 MiB measured, +5-9 on the others). 40 MiB leaves room
    # for the allocator and the batches in flight.
    assert grown < 40, f"hub RSS grew {grown:.0f} MiB"


# -- item 8: a shared document's size cap -------------------------------------

DOC_CAP = 2 * 1024 * 1024  # small, so that the test is quick; the default is 16 MiB
CHUNK = 200_000  # characters per update (below the 256 KiB payload cap)


def _growing_updates(count: int) -> Iterator[bytes]:
    """Updates that each add CHUNK random characters to one Text."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    for _ in range(count):
        state = doc.get_state()
        text += secrets.token_hex(CHUNK // 2)
        yield doc.get_update(state)


async def test_shared_documents_have_a_size_cap(rt_hub_factory: Any, store: str) -> None:
    hub = _start(rt_hub_factory, store, "--max-doc-bytes", str(DOC_CAP))
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        watcher = await RawClient(hub.url, token=token("ann")).connect()
        synced = await watcher.call("doc.sync", {"doc": "big"})
        assert synced["ok"], synced
        attacker = await RawClient(hub.url, token=token("mallory")).connect()
        acks = [
            await attacker.call("doc.update", {"doc": "big", "update": update})
            for update in _growing_updates(3 * DOC_CAP // CHUNK)
        ]
        grown = rss_mb(hub) - before
        print(
            f"doc cap {store}: {sum(a.get('ok', False) for a in acks)} accepted, +{grown:.1f} MiB"
        )
        late = await RawClient(hub.url, token=token("bob")).connect()
        full = await late.call("doc.sync", {"doc": "big"})
        for client in (watcher, attacker, late):
            await client.close()
        await served(bystander)
    bystander.check()

    accepted = [a for a in acks if a.get("ok")]
    refused = [a["error"] for a in acks if not a.get("ok")]
    # Unfixed: all 30 updates (6 MB) accepted. Fixed: up to the cap, then
    # too_large naming the cap and its option, and nothing more is stored.
    assert refused, "every update was accepted: the document has no size cap"
    assert {e["code"] for e in refused} == {"too_large"}, refused[:3]
    assert "max_doc_bytes" in refused[0]["message"] and str(DOC_CAP) in refused[0]["message"]
    assert len(accepted) * CHUNK <= DOC_CAP
    assert acks[: len(accepted)] == accepted, "a refused update was followed by an accepted one"
    # The document is what the accepted updates made it, for a newcomer too.
    assert full["ok"], full
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(full["update"])
    assert len(str(doc.get("t", type=pycrdt.Text))) == len(accepted) * CHUNK
    # Memory: unfixed, the hub held the 6 MB document (in pycrdt and the
    # store) and sent it to the watcher (+9-14 MiB RSS measured), and the
    # stock client could not sync it (over aiohttp's 4 MiB message cap);
    # fixed, at most the 2 MiB cap of each (+4-6 MiB measured). 25 MiB is the
    # stated bound; the test's point is the refusal above.
    assert grown < 25, f"hub RSS grew {grown:.0f} MiB"


# -- item 9: presence names and colors ----------------------------------------


async def test_presence_names_and_colors_are_made_safe(rt_hub_factory: Any, store: str) -> None:
    hub = _start(rt_hub_factory, store)
    long_name = "Alice\u202e\u200b\x00\n" + "A" * 500
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        ann = await RawClient(hub.url, token=token("ann", name="Ann", color="#1f77b4")).connect()
        joined = await ann.call("presence.join", {"room": "team"})
        assert joined["ok"], joined
        mallory = await RawClient(
            hub.url, token=token("mallory", name=long_name, color=INJECTION)
        ).connect()
        me = await mallory.call("presence.join", {"room": "team"})
        listed = await ann.call("presence.list", {"room": "team"})
        grown = rss_mb(hub) - before
        await ann.close()
        await mallory.close()
        await served(bystander)
    bystander.check()

    assert me["ok"], me
    print(f"presence {store}: RSS +{grown:.1f} MiB")
    members = {m["user"]: m for m in listed["members"]}
    # A safe color is kept as it is; anything else becomes the derived one.
    assert members["ann"]["color"] == "#1f77b4"
    assert members["mallory"]["color"] == color_for("mallory") == me["member"]["color"]
    name = members["mallory"]["name"]
    assert name.startswith("Alice A") and len(name) == DEFAULT_LIMITS.max_name_chars
    assert not any(c in name for c in "\u202e\u200b\x00\n"), repr(name)
    # Two joins: nothing to grow. 20 MiB is noise (measured +0-2 MiB either way).
    assert grown < 20, f"hub RSS grew {grown:.0f} MiB"


# -- item 10: store URLs never show their password ----------------------------


@pytest.fixture
def redis_with_password(rt_redis_prefix: str) -> tuple[str, str]:
    """A Redis store URL with a password, and the password. Redis without
    requirepass gives its default user 'nopass', which takes any password
    with AUTH default <pw>, so the URL works and the password is real."""
    password = "pw-" + secrets.token_hex(12)
    host = REDIS_URL.split("://", 1)[1]
    return f"redis://default:{password}@{host}?prefix={rt_redis_prefix}", password


async def test_the_hub_never_shows_the_redis_password(
    rt_hub_factory: Any, redis_with_password: tuple[str, str]
) -> None:
    url, password = redis_with_password
    hub = rt_hub_factory(store=url, secret=SECRET)
    async with Bystander(hub.url, token=token("bystander")) as bystander:
        before = rss_mb(hub)
        client = await RawClient(hub.url, token=token("ann")).connect()
        assert (await client.publish("news", {"n": 1}))["ok"]
        await client.close()
        grown = rss_mb(hub) - before
        await served(bystander)
    bystander.check()
    hub.terminate()
    log = "\n".join(hub.log)
    assert "default:***@" in log, log  # the store is named, masked
    assert password not in log
    assert grown < 20, f"hub RSS grew {grown:.0f} MiB"  # nothing to grow

    # A Redis that is not there: the error says which, without the password.
    dead = url.replace(REDIS_URL.split("://", 1)[1].split("/", 1)[0], "127.0.0.1:1")
    with pytest.raises(RuntimeError) as failed:
        rt_hub_factory(store=dead, secret=SECRET)
    assert "127.0.0.1:1" in str(failed.value)
    assert password not in str(failed.value)


@pytest.mark.jupyter
async def test_jupyter_never_shows_the_redis_password(
    tmp_path: Path, redis_with_password: tuple[str, str]
) -> None:
    """The status API and the server's whole log."""
    from tests.jupyter.server import JupyterServer

    url, password = redis_with_password
    server = JupyterServer(tmp_path / "jupyter", extra_args=[f"--RtkitExtension.store={url}"])
    server.start()
    try:
        async with JupyterBystander(server) as bystander:
            before = rss_mb(server)
            status = await asyncio.to_thread(server.get_json, "rtkit/api/status")
            grown = rss_mb(server) - before
            await served(bystander)
        bystander.check()
    finally:
        server.stop()
    assert status["store"].startswith("redis://default:***@"), status["store"]
    assert password not in str(status)
    assert "default:***@" in server.output()
    assert password not in server.output()
    assert grown < 20, f"server RSS grew {grown:.0f} MiB"  # a status read: nothing to grow


@pytest.mark.jupyter
async def test_a_jupyter_user_cannot_set_an_unsafe_color(tmp_path: Path) -> None:
    """Jupyter lets each user PATCH their own color (/api/me); the identity
    rtkit builds from it keeps only a safe one."""
    from tests.jupyter.server import JupyterServer

    server = JupyterServer(tmp_path / "jupyter").start()
    try:
        async with JupyterBystander(server) as bystander:
            before = rss_mb(server)
            status, body = await asyncio.to_thread(
                server.request, "api/me", method="PATCH", body={"color": INJECTION}
            )
            assert status == 200 and body["identity"]["color"] == INJECTION, (status, body)
            user = body["identity"]["username"]
            # The same Jupyter user (token and login cookie) joins a room.
            mallory = await jupyter_client(server, "mallory", cookie=True)
            joined = await mallory.call("presence.join", {"room": "team"})
            await mallory.close()
            grown = rss_mb(server) - before
            await served(bystander)
        bystander.check()
    finally:
        server.stop()
    assert joined["ok"], joined
    member = joined["member"]
    assert member["user"] == user
    assert member["color"] == color_for(user), member
    # One join: nothing to grow (measured +0-1 MiB); 20 MiB is noise.
    assert grown < 20, f"server RSS grew {grown:.0f} MiB"
