"""A member's color is the CSS injection from issue #15 (item 9): in another
member's PresenceBar, in headless Chromium, the avatar stays an avatar. It is
not positioned, covers nothing, and nothing fetches the outside URL.

Two paths reach the bar: the hub's presence events (the direct path; the hub
replaces the color before anyone sees it) and a member list relayed by a
kernel (the widget checks colors itself). The page comes from a static file
server on loopback, an origin the hub is told to allow (--cors-origin).
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest

from rtkit.hub.auth import TOKEN_ALGORITHM
from tests.security.attack import Bystander, rss_mb
from tests.security.test_caps import served

from .lab import ARTIFACTS, REPO, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "presence-safety-" + "0123456789abcdef" * 2
ROOM = "team"
EVIL_HOST = "evil.example"
INJECTION = (
    "red;position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:99999;"
    f"background:url(http://{EVIL_HOST}/pwned.png)"
)
BUNDLE = REPO / "rtkit" / "widgets" / "static" / "widgets.js"

PAGE = """<!doctype html>
<html><body style="margin:0">
<div id="direct"></div><div id="relay"></div>
<script type="module">
import widgets from "/widgets-under-test.js";
function model(values) {
  const handlers = {};
  return {
    get: (key) => values[key],
    set: (key, value) => { values[key] = value; },
    on: (event, cb) => { (handlers[event] ||= []).push(cb); },
    off: () => {},
    send: () => {},
    save_changes: () => {},
    emit: (event, msg) => { for (const cb of handlers[event] || []) cb(msg); },
  };
}
const common = {
  _kind: "presence", room: %(room)s, state: {}, max_avatars: 12, path: "/socket.io/",
};
widgets.render({
  model: model({ ...common, mode: "direct", url: %(hub)s, token: %(token)s }),
  el: document.getElementById("direct"),
});
const relay = model({ ...common, mode: "relay", url: "", token: "" });
widgets.render({ model: relay, el: document.getElementById("relay") });
window.relayMembers = (members) => relay.emit("msg:custom", { type: "members", members, me: null });
</script></body></html>
"""


def token(user: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": user,
        "iat": now,
        "exp": now + 3600,
        "rtkit": {"publish": ["*"], "subscribe": ["*"]},
        **claims,
    }
    return jwt.encode(body, SECRET, algorithm=TOKEN_ALGORITHM)


@contextmanager
def bystander_running(url: str) -> Iterator[list[Bystander]]:
    """A Bystander on its own thread and event loop (Playwright's sync API
    wants this thread to itself); checked when the block ends."""
    done = threading.Event()
    out: list[Bystander] = []
    failure: list[BaseException] = []

    async def run() -> None:
        async with Bystander(url, token=token("bystander")) as bystander:
            out.append(bystander)
            await asyncio.to_thread(done.wait)
            await served(bystander)

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # raised again in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=main, name="bystander")
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join(30)
    if failure:
        raise failure[0]
    out[0].check()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site(root: Path) -> Iterator[str]:
    """Serve ``root`` on a free loopback port; yields its origin."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="static site")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def write_page(root: Path, name: str, hub_url: str, user_token: str) -> None:
    """A page that renders the PresenceBar of ROOM with the built bundle."""
    html = PAGE % {
        "room": json.dumps(ROOM),
        "hub": json.dumps(hub_url),
        "token": json.dumps(user_token),
    }
    (root / name).write_text(html)


AVATAR_FACTS = """(el) => {
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  const hit = document.elementFromPoint(innerWidth / 2, innerHeight / 2);
  return {
    position: style.position,
    width: box.width,
    height: box.height,
    background: style.backgroundColor,
    image: style.backgroundImage,
    covers: el.contains(hit),
    title: el.title,
  };
}"""


def test_an_injected_color_stays_inside_the_avatar(rt_hub_factory: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: run make widgets")
    (tmp_path / "widgets-under-test.js").write_text(BUNDLE.read_text())
    outside: list[str] = []
    with static_site(tmp_path) as site:
        hub = rt_hub_factory(secret=SECRET, extra_args=["--cors-origin", site])
        write_page(tmp_path, "ann.html", hub.url, token("ann", name="Ann", color="#2ca02c"))
        # Mallory: the injected color, and Ann's display name.
        evil = token("mallory", name="Ann", color=INJECTION)
        write_page(tmp_path, "mallory.html", hub.url, evil)
        with bystander_running(hub.url), chromium() as browser:
            before = rss_mb(hub)
            context = browser.new_context(viewport={"width": 900, "height": 600})
            # Any request to the outside host is recorded and never leaves.
            context.route(
                f"**://{EVIL_HOST}/**",
                lambda route: (outside.append(route.request.url), route.abort()),
            )
            ann = context.new_page()
            ann.goto(f"{site}/ann.html")
            browser.new_context().new_page().goto(f"{site}/mallory.html")

            bar = ann.locator("#direct .rtkit-presence")
            expect(bar).to_have_attribute("data-members", "2", timeout=20_000)
            ann.evaluate(
                "(members) => window.relayMembers(members)",
                [
                    {"id": "m1", "user": "mallory", "name": "Ann", "color": INJECTION},
                    {"id": "m2", "user": "eve", "name": "Eve", "color": "#ff7f0e"},
                ],
            )
            relay = ann.locator("#relay .rtkit-presence")
            expect(relay).to_have_attribute("data-members", "2")
            direct = bar.locator('.rtkit-avatar[data-user="mallory"]').evaluate(AVATAR_FACTS)
            relayed = relay.locator('.rtkit-avatar[data-user="mallory"]').evaluate(AVATAR_FACTS)
            eve = relay.locator('.rtkit-avatar[data-user="eve"]').evaluate(AVATAR_FACTS)
            # The page had every chance to fetch: wait for the network to be quiet.
            ann.wait_for_load_state("networkidle")
            ann.screenshot(path=str(ARTIFACTS / "presence-injection.png"))
            grown = rss_mb(hub) - before

    for facts in (direct, relayed):
        assert facts["position"] == "static", facts
        assert facts["width"] <= 40 and facts["height"] <= 40, facts
        assert not facts["covers"], facts
        assert facts["image"] == "none", facts
        # The name is Ann's; the authenticated user id beside it is not.
        assert facts["title"].startswith("Ann (@mallory)"), facts
    assert eve["background"] == "rgb(255, 127, 14)", eve  # a safe color is kept
    assert not outside, outside
    # Two browser connections and a few presence events: nothing to grow
    # (measured under 2 MiB, fixed or not); 20 MiB is the stated bound.
    assert grown < 20, f"hub RSS grew {grown:.0f} MiB"
