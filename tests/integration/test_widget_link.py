"""``rtkit.widgets.link`` and the presence bar's kernel relay against a real hub:
two clients stand for two people's kernels."""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import ipywidgets
import pytest
import traitlets

import rtkit
import rtkit.aio
from rtkit.pytest_plugin import InProcessHub
from rtkit.widgets import PresenceBar, link

from .conftest import token
from .helpers import WAIT_TIMEOUT, poll_until, wait_until


class Values:
    """Every value a trait takes, with a wait for a given one."""

    def __init__(self, widget: traitlets.HasTraits, name: str = "value") -> None:
        self.seen: list[Any] = []
        self.threads: set[str] = set()
        self._changed = threading.Condition()
        widget.observe(self._record, names=name)

    def _record(self, change: dict[str, Any]) -> None:
        with self._changed:
            self.seen.append(change["new"])
            self.threads.add(threading.current_thread().name)
            self._changed.notify_all()

    def wait_for(self, value: Any, within: float = WAIT_TIMEOUT) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: value in self.seen, within):
                raise AssertionError(f"waited {within}s for {value!r}; saw {self.seen}")


@pytest.fixture
def two(shared_hub: InProcessHub) -> Iterator[tuple[rtkit.Client, rtkit.Client]]:
    with rtkit.connect(shared_hub.url) as a, rtkit.connect(shared_hub.url) as b:
        yield a, b


def wait_for_key(doc: rtkit.SharedDoc, key: str) -> None:
    poll_until(lambda: key in doc, f"{key!r} to reach {doc.name!r}")


def doc_name() -> str:
    return f"link.{uuid.uuid4().hex[:8]}"


def test_linked_sliders_move_together(two: tuple[rtkit.Client, rtkit.Client]) -> None:
    a, b = two
    name = doc_name()
    params_a = a.shared(name)
    slider_a = ipywidgets.IntSlider(value=10, max=100)
    slider_b = ipywidgets.IntSlider(value=0, max=100)

    link(slider_a, params_a, "alpha")  # a new key: the widget's value goes in
    params_a.flush(timeout=WAIT_TIMEOUT)
    params_b = b.shared(name)
    link(slider_b, params_b, "alpha")  # a key that exists: the widget takes its value
    assert slider_b.value == 10 and type(slider_b.value) is int
    seen_b = Values(slider_b)

    seen_a = Values(slider_a)
    slider_a.value = 42
    seen_b.wait_for(42)
    slider_b.value = 7
    seen_a.wait_for(7)
    assert (slider_a.value, slider_b.value) == (7, 7)
    assert params_a["alpha"] == params_b["alpha"] == 7
    # Each side took each remote value once, without echoing it back.
    assert seen_a.seen == [42, 7]
    assert seen_b.seen == [42, 7]


def test_people_linking_at_once_end_on_one_value(
    two: tuple[rtkit.Client, rtkit.Client],
) -> None:
    a, b = two
    name = doc_name()
    params_a, params_b = a.shared(name), b.shared(name)
    slider_a = ipywidgets.IntSlider(value=10)
    slider_b = ipywidgets.IntSlider(value=20)
    # Both find the key missing and write their own value; the CRDT picks one.
    link(slider_a, params_a, "alpha")
    link(slider_b, params_b, "alpha")
    params_a.flush(timeout=WAIT_TIMEOUT)
    params_b.flush(timeout=WAIT_TIMEOUT)
    poll_until(
        lambda: slider_a.value == slider_b.value == params_a["alpha"] == params_b["alpha"],
        "both sliders and both documents to agree",
    )
    assert slider_a.value in (10, 20)


def test_other_widget_kinds_round_trip(two: tuple[rtkit.Client, rtkit.Client]) -> None:
    a, b = two
    name = doc_name()
    params_a, params_b = a.shared(name), b.shared(name)
    pairs: list[tuple[Any, Any, str, Any]] = [
        (ipywidgets.FloatSlider(value=0.5), ipywidgets.FloatSlider(), "ratio", 0.75),
        (
            ipywidgets.Dropdown(options=["red", "green"], value="red"),
            ipywidgets.Dropdown(options=["red", "green"], value="red"),
            "color",
            "green",
        ),
        (ipywidgets.Text(value=""), ipywidgets.Text(), "title", "Q3 revenue"),
        (ipywidgets.Checkbox(value=False), ipywidgets.Checkbox(), "show", True),
        (
            ipywidgets.IntRangeSlider(value=(2, 8), max=10),
            ipywidgets.IntRangeSlider(value=(0, 10), max=10),
            "range",
            (3, 9),
        ),
    ]
    for left, right, key, new in pairs:
        link(left, params_a, key)
        seen = Values(right)
        wait_for_key(params_b, key)
        link(right, params_b, key)  # takes the value already shared
        assert right.value == left.value, key
        left.value = new
        seen.wait_for(new)
        assert right.value == new and type(right.value) is type(new), key


def test_a_value_the_widget_refuses_is_logged_not_raised(
    two: tuple[rtkit.Client, rtkit.Client], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two
    name = doc_name()
    params_a, params_b = a.shared(name), b.shared(name)
    mine = ipywidgets.Dropdown(options=["red", "green"], value="red")
    theirs = ipywidgets.Dropdown(options=["red", "green", "blue"], value="red")
    link(mine, params_a, "color")
    wait_for_key(params_b, "color")
    link(theirs, params_b, "color")
    with caplog.at_level(logging.WARNING, logger="rtkit.widgets._link"):
        theirs.value = "blue"
        poll_until(lambda: "does not accept" in caplog.text, "a warning about the refused value")
    assert mine.value == "red"
    # The link still works for values both accept.
    seen = Values(mine)
    theirs.value = "green"
    seen.wait_for("green")


def test_unlink_stops_both_ways(two: tuple[rtkit.Client, rtkit.Client]) -> None:
    a, b = two
    name = doc_name()
    params_a, params_b = a.shared(name), b.shared(name)
    slider_a, slider_b = ipywidgets.IntSlider(value=1), ipywidgets.IntSlider(value=1)
    link(slider_a, params_a, "x")
    wait_for_key(params_b, "x")
    seen_b = Values(slider_b)
    kept = link(slider_b, params_b, "x")
    gone = link(ipywidgets.IntSlider(), params_b, "x")
    gone.unlink()
    slider_a.value = 5
    seen_b.wait_for(5)
    assert gone.widget.value == 1  # type: ignore[attr-defined]
    gone.widget.value = 9  # type: ignore[attr-defined]
    # A live link writes its document at once, so this would already show 9.
    assert params_b["x"] == 5 and "unlinked" in repr(gone) and "linked" in repr(kept)


def test_link_refuses_what_it_cannot_bind(two: tuple[rtkit.Client, rtkit.Client]) -> None:
    params = two[0].shared(doc_name())
    with pytest.raises(TypeError, match="no trait 'level'"):
        link(ipywidgets.IntSlider(), params, "x", name="level")
    with pytest.raises(TypeError, match="key"):
        link(ipywidgets.IntSlider(), params, "")
    picker = ipywidgets.DatePicker(value=datetime.date(2026, 11, 26))
    with pytest.raises(TypeError, match=r"DatePicker\.value is a date, which shared key 'day'"):
        link(picker, params, "day")
    assert "day" not in params
    # A value it cannot store later on fails the assignment, and says why.
    empty = ipywidgets.DatePicker()
    link(empty, params, "day")
    with pytest.raises(TypeError, match="cannot hold"):
        empty.value = datetime.date(2026, 11, 27)
    assert params["day"] is None


async def test_link_works_with_the_async_client(shared_hub: InProcessHub) -> None:
    name = doc_name()
    a = await rtkit.aio.connect(shared_hub.url)
    b = await rtkit.aio.connect(shared_hub.url)
    async with a, b:
        params_a, params_b = await a.shared(name), await b.shared(name)
        slider_a, slider_b = ipywidgets.FloatSlider(), ipywidgets.FloatSlider()
        link(slider_a, params_a, "beta")
        await wait_until(lambda: "beta" in params_b, "the key to reach the other side")
        link(slider_b, params_b, "beta")
        slider_a.value = 2.5
        await wait_until(lambda: slider_b.value == 2.5, "the async side to move")
        slider_b.value = 0.25
        await wait_until(lambda: slider_a.value == 0.25, "the move to come back")


# -- the presence bar when the browser cannot reach the hub ----------------------


class Sent:
    """What a widget sent through its comm."""

    def __init__(self) -> None:
        self.contents: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def __call__(self, content: dict[str, Any], buffers: Any = None) -> None:
        with self._changed:
            self.contents.append(content)
            self._changed.notify_all()

    def wait_for(self, check: Any, what: str) -> dict[str, Any]:
        with self._changed:
            ok = self._changed.wait_for(
                lambda: bool(self.contents) and check(self.contents[-1]), WAIT_TIMEOUT
            )
            if not ok:
                raise AssertionError(f"waited for {what}; last sent {self.contents[-1:]}")
            return self.contents[-1]


def names(content: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((m["user"], m["connections"]) for m in content["members"])


def test_presence_bar_relays_the_kernel_members(
    secret_hub: InProcessHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = f"team.{uuid.uuid4().hex[:8]}"
    with (
        rtkit.connect(secret_hub.url, token("ada")) as ada,
        rtkit.connect(secret_hub.url, token("grace")) as grace,
    ):
        bar = PresenceBar(room, hub=ada, mode="relay", state={"status": "reading"})
        sent = Sent()
        monkeypatch.setattr(bar, "send", sent)
        bar._on_front_end_msg(bar, {"type": "relay"}, [])
        first = sent.wait_for(lambda c: names(c) == [("ada", 1)], "ada alone")
        assert first["type"] == "members" and first["me"] == first["members"][0]["id"]
        assert first["members"][0]["state"] == {"status": "reading"}

        theirs = grace.presence(room)
        sent.wait_for(lambda c: names(c) == [("ada", 1), ("grace", 1)], "grace joining")
        bar.state = {"status": "writing"}
        sent.wait_for(
            lambda c: any(m["state"].get("status") == "writing" for m in c["members"]),
            "ada's new state",
        )
        theirs.leave()
        sent.wait_for(lambda c: names(c) == [("ada", 1)], "grace leaving")

        # Stopping the relay leaves the room the relay joined.
        watcher = grace.presence(room)
        bar.close()
        poll_until(lambda: all(m.user != "ada" for m in watcher.members), "ada to leave")


def test_presence_bar_checks_its_arguments() -> None:
    with pytest.raises(rtkit.BadRequest):
        PresenceBar("")
    with pytest.raises(ValueError):
        PresenceBar("team", max_avatars=0)
    bar = PresenceBar("team", state={"status": "here"})
    assert (bar.room, bar.state, bar.mode) == ("team", {"status": "here"}, "auto")
    bar.close()


def test_presence_bar_relay_leaves_a_room_its_client_had_left(
    secret_hub: InProcessHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = f"team.{uuid.uuid4().hex[:8]}"
    with (
        rtkit.connect(secret_hub.url, token("ada")) as ada,
        rtkit.connect(secret_hub.url, token("grace")) as grace,
    ):
        ada.presence(room).leave()  # joined and left before: not the caller's any more
        bar = PresenceBar(room, hub=ada, mode="relay")
        sent = Sent()
        monkeypatch.setattr(bar, "send", sent)
        bar._on_front_end_msg(bar, {"type": "relay"}, [])
        sent.wait_for(lambda c: names(c) == [("ada", 1)], "ada in the room")
        watcher = grace.presence(room)
        bar.close()
        poll_until(lambda: all(m.user != "ada" for m in watcher.members), "ada to leave")
