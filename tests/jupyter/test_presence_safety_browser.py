"""A member's color is the CSS injection from issue #15 (item 9): in another
member's PresenceBar, in headless Chromium, the avatar stays an avatar. It is
not positioned, covers nothing, and nothing fetches the outside URL.

Two paths reach the bar: the hub's presence events (the direct path; the hub
replaces the color before anyone sees it) and a member list relayed by a
kernel (the widget checks colors itself). The page is served on the hub's
own origin (Playwright answers for it), so the direct path needs no CORS.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
  model: model({ ...common, mode: "direct", url: location.origin, token: %(token)s }),
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


def serve_page(page: Any, origin: str, user_token: str) -> None:
    """The test page and the widget bundle, answered on the hub's origin."""
    html = PAGE % {"room": json.dumps(ROOM), "token": json.dumps(user_token)}
    page.route(
        f"{origin}/presence-under-test.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    page.route(
        f"{origin}/widgets-under-test.js",
        lambda route: route.fulfill(
            status=200, content_type="text/javascript", body=BUNDLE.read_text()
        ),
    )
    page.goto(f"{origin}/presence-under-test.html")


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


def test_an_injected_color_stays_inside_the_avatar(rt_hub_factory: Any) -> None:
    from playwright.sync_api import expect

    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: run make widgets")
    hub = rt_hub_factory(secret=SECRET)
    outside: list[str] = []
    with bystander_running(hub.url), chromium() as browser:
        before = rss_mb(hub)
        context = browser.new_context(viewport={"width": 900, "height": 600})
        # Any request to the outside host is recorded and never leaves.
        context.route(
            f"**://{EVIL_HOST}/**",
            lambda route: (outside.append(route.request.url), route.abort()),
        )
        context.on("request", lambda req: outside.append(req.url) if EVIL_HOST in req.url else None)
        ann = context.new_page()
        serve_page(ann, hub.url, token("ann", name="Ann", color="#2ca02c"))
        # Mallory: the injected color, and Ann's display name.
        mallory = browser.new_context().new_page()
        serve_page(mallory, hub.url, token("mallory", name="Ann", color=INJECTION))

        bar = ann.locator("#direct .rtkit-presence")
        expect(bar).to_have_attribute("data-members", "2", timeout=20_000)
        ann.evaluate(
            "(members) => window.relayMembers(members)",
            [
                {"id": "m1", "user": "mallory", "name": "Ann", "color": INJECTION},
                {"id": "m2", "user": "eve", "name": "Eve", "color": "#ff7f0e"},
            ],
        )
        expect(ann.locator("#relay .rtkit-presence")).to_have_attribute("data-members", "2")
        direct = bar.locator('.rtkit-avatar[data-user="mallory"]').evaluate(AVATAR_FACTS)
        relayed = ann.locator('#relay .rtkit-avatar[data-user="mallory"]').evaluate(AVATAR_FACTS)
        eve = ann.locator('#relay .rtkit-avatar[data-user="eve"]').evaluate(AVATAR_FACTS)
        ann.screenshot(path=str(ARTIFACTS / "presence-injection.png"))
        grown = rss_mb(hub) - before
        # The page had every chance to fetch: wait for the network to be quiet.
        ann.wait_for_load_state("networkidle")

    for facts in (direct, relayed):
        assert facts["position"] == "static", facts
        assert facts["width"] <= 40 and facts["height"] <= 40, facts
        assert not facts["covers"], facts
        assert facts["image"] == "none", facts
        # The name is Ann's, the authenticated user id beside it is not.
        assert facts["title"].startswith("Ann (@mallory)"), facts
    assert eve["background"] == "rgb(255, 127, 14)", eve  # a safe color is kept
    assert not outside, outside
    # Two browser connections and a few presence events: unfixed and fixed
    # hubs both grew under 2 MiB; 20 MiB is the stated bound.
    assert grown < 20, f"hub RSS grew {grown:.0f} MiB"
