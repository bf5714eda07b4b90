"""The command line as a newcomer uses it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest

from rtkit.hub.auth import TokenAuthenticator
from rtkit.pytest_plugin import HubProcess

SECRET = "cli-test-secret-0123456789abcdef!"


def rtkit_cli(*args: str, stdin: str | None = None, timeout: float = 30) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "rtkit", "--log-level", "WARNING", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_explains_every_command() -> None:
    out = rtkit_cli("--help")
    assert out.returncode == 0
    for command in ("hub", "token", "publish", "tail"):
        assert command in out.stdout
    hub_help = rtkit_cli("hub", "--help").stdout
    for flag in ("--store", "--secret", "--allow-anonymous", "--publish-rate", "sqlite:///"):
        assert flag in hub_help


async def test_token_grants_what_it_says() -> None:
    out = rtkit_cli("token", "--secret", SECRET, "--user", "ada", "--publish", "lab.*")
    assert out.returncode == 0, out.stderr
    identity = TokenAuthenticator(SECRET).verify(out.stdout.strip())
    assert identity.user == "ada"
    assert identity.can_publish("lab.temps") and not identity.can_publish("prices")
    # Only what it names: no --subscribe, no subscribing.
    assert not identity.can_subscribe("lab.temps")


def test_token_with_only_subscribe_is_read_only() -> None:
    out = rtkit_cli("token", "--secret", SECRET, "--user", "bob", "--subscribe", "test.*")
    assert out.returncode == 0, out.stderr
    identity = TokenAuthenticator(SECRET).verify(out.stdout.strip())
    assert identity.can_subscribe("test.a") and not identity.can_subscribe("prod")
    assert not identity.can_publish("test.a") and not identity.can_publish("prod")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hub"], "needs a token secret"),
        (["hub", "--allow-anonymous", "--host", "0.0.0.0"], "loopback"),
        (["hub", "--secret", "short"], "at least 32 bytes"),
        (["hub", "--allow-anonymous", "--store", "mongodb://x"], "unknown store URL"),
        (["token", "--user", "ada"], "--secret"),
        (["token", "--secret", SECRET, "--user", "ada"], "--publish '*' --subscribe '*'"),
        (["hub", "--allow-anonymous", "--webhook", "http://127.0.0.1:9/h"], "--webhook-secret"),
        (
            ["hub", "--allow-anonymous", "--webhook", "ftp://x/h", "--webhook-secret", "s" * 16],
            "http:// or https://",
        ),
        (
            ["hub", "--allow-anonymous", "--webhook", "http://h/x", "--webhook-secret", "short"],
            "at least 16 characters",
        ),
    ],
)
def test_misconfiguration_fails_fast_with_a_hint(args: list[str], message: str) -> None:
    out = rtkit_cli(*args, timeout=15)
    assert out.returncode == 2
    assert message in out.stderr


def test_publish_then_tail_round_trip(rt_hub: HubProcess) -> None:
    lines = '{"px": 1.5}\n\nnot json\n[1, 2]\n"done"\n'
    pub = rtkit_cli("publish", "prices", "--url", rt_hub.url, stdin=lines)
    assert pub.returncode == 0, pub.stderr
    assert "not JSON" in pub.stderr  # the bad line is reported, the rest published
    tail = rtkit_cli("tail", "prices", "--url", rt_hub.url, "--since", "0", "--count", "3")
    assert tail.returncode == 0, tail.stderr
    messages = [orjson.loads(line) for line in tail.stdout.splitlines()]
    assert [m["seq"] for m in messages] == [1, 2, 3]
    assert [m["data"] for m in messages] == [{"px": 1.5}, [1, 2], "done"]


def test_unreachable_hub_is_a_clear_error() -> None:
    out = rtkit_cli("tail", "x", "--url", "http://127.0.0.1:9", "--count", "1")
    assert out.returncode == 2
    assert "rtkit tail:" in out.stderr


def test_the_hub_raises_its_open_file_limit(rt_hub_factory: Any) -> None:
    """A soft limit of 1024 open files (a common default) would cap a hub at
    about a thousand clients; the hub raises it to the hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        hub = rt_hub_factory()  # inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open(f"/proc/{hub.proc.pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    hub_soft, hub_hard = line.split()[3:5]
    assert hub_soft == hub_hard == str(hard), line
    assert any(f"open file limit {hard}" in line for line in hub.log)
