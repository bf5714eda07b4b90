"""The tooling tests and benchmarks share: the process helpers
(rtkit._process), the in-process hub, the benchmarks' results writer, and
the limit defaults every host offers as options."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

import rtkit
from rtkit._process import (
    OutputLines,
    free_port,
    kill_group,
    start_group,
    stop_group,
    wait_for_port,
)
from rtkit.cli import build_parser, hub_config
from rtkit.config import DEFAULT_LIMITS, HubConfig, hub_default
from rtkit.pytest_plugin import InProcessHub

REPO = Path(__file__).resolve().parents[2]

# -- process groups --------------------------------------------------------

# Prints its child's pid, then "ready", then waits; its child sleeps: a
# group of two processes, as a server with a worker would be.
_PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    if sys.argv[1] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(child.pid, flush=True)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    # A zombie is dead for our purposes: its stat line says "Z".
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_parent(mode: str) -> tuple[subprocess.Popen[str], OutputLines, int]:
    proc = start_group([sys.executable, "-c", _PARENT, mode], stdout=subprocess.PIPE, text=True)
    output = OutputLines(proc)
    output.wait_for("ready", within=20)
    return proc, output, int(output.lines[0])


def _wait_gone(pid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)  # polling /proc: a process that is not ours has no event


@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_stop_group_ends_the_leader_and_what_it_started(mode: str) -> None:
    proc, _, child = _start_parent(mode)
    code = stop_group(proc, timeout=1 if mode == "stubborn" else 10)
    # SIGTERM ends the polite one; the stubborn one is killed after the timeout.
    assert code == (-15 if mode == "polite" else -9)
    _wait_gone(child)


def test_kill_group_kills_at_once() -> None:
    proc, _, child = _start_parent("stubborn")
    kill_group(proc)
    assert proc.returncode == -9
    _wait_gone(child)


def test_output_lines_report_an_exit_before_the_line() -> None:
    proc = start_group(
        [sys.executable, "-c", "print('starting'); raise SystemExit(3)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    output = OutputLines(proc)
    with pytest.raises(RuntimeError, match="exited while starting"):
        output.wait_for("ready", within=20)
    assert proc.wait(10) == 3
    assert output.lines == ["starting"]


def test_output_lines_of_a_restart_wait_for_the_new_run() -> None:
    log: list[str] = ["ready (an earlier run)"]
    proc = start_group([sys.executable, "-c", "print('ready')"], stdout=subprocess.PIPE, text=True)
    output = OutputLines(proc, lines=log)
    assert output.wait_for("ready", within=20) == "ready"
    assert output.wait_for("earlier", within=20, since=0) == "ready (an earlier run)"
    proc.wait(10)


def test_wait_for_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        wait_for_port(server.getsockname()[1], within=5)
    proc = start_group([sys.executable, "-c", "raise SystemExit(1)"])
    with pytest.raises(RuntimeError, match="exited with 1"):
        wait_for_port(free_port(), proc, within=20)
    with pytest.raises(TimeoutError):
        wait_for_port(free_port(), within=0.2)


# -- the in-process hub -----------------------------------------------------


def test_an_in_process_hub_serves_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    # As for a HubProcess, a secret in the environment does not apply.
    monkeypatch.setenv("RTKIT_SECRET", "x" * 40)
    hub = InProcessHub(extra_args=["--max-subscriptions", "3"])
    assert hub.config().limits.max_subscriptions == 3
    assert hub.config().secret is None
    hub.start()
    try:
        assert hub.running and hub.port > 0
        with pytest.raises(RuntimeError, match="already running"):
            hub.start()
        with rtkit.connect(hub.url) as client:
            assert client.channel("tooling").publish({"n": 1}) == 1
    finally:
        assert hub.terminate() == 0
    assert not hub.running


def test_an_in_process_hub_only_runs_on_aiohttp() -> None:
    with pytest.raises(ValueError, match="HubProcess"):
        InProcessHub(extra_args=["--server", "tornado"]).start()


def test_an_in_process_hub_that_cannot_start_says_why() -> None:
    hub = InProcessHub(store="nowhere://")
    with pytest.raises(RuntimeError, match="failed to start") as failed:
        hub.start()
    assert "nowhere://" in str(failed.value.__cause__)
    assert not hub.running


# -- limit defaults ---------------------------------------------------------


def test_rtkit_hub_defaults_are_hub_config_defaults() -> None:
    args = build_parser().parse_args(["hub", "--allow-anonymous", "--store", "memory://"])
    assert hub_config(args) == HubConfig(allow_anonymous=True, store="memory://")


def test_jupyter_traits_default_to_hub_config_defaults() -> None:
    from rtkit_jupyter.app import RtkitExtension

    from rtkit.storage.base import Retention

    traits = RtkitExtension.class_traits()
    expected = {
        "max_payload_bytes": DEFAULT_LIMITS.max_payload_bytes,
        "publish_rate": DEFAULT_LIMITS.publish_rate,
        "publish_burst": DEFAULT_LIMITS.publish_burst,
        "max_subscriptions": DEFAULT_LIMITS.max_subscriptions,
        "max_connections_per_user": DEFAULT_LIMITS.max_connections_per_user,
        "ping_interval": hub_default("ping_interval"),
        "ping_timeout": hub_default("ping_timeout"),
        "websocket_compression": hub_default("websocket_compression"),
        "bridge_channel": hub_default("bridge_channel"),
        "retention_max_messages": Retention().max_messages,
        "retention_max_age": Retention().max_age,
    }
    assert {name: traits[name].default_value for name in expected} == expected


def test_webhook_options_default_to_the_webhooks_defaults() -> None:
    from rtkit_jupyter.app import RtkitExtension

    from rtkit.config import Webhooks, webhook_default

    url, secret = "https://hooks.example.org/rtkit", "w" * 16
    args = build_parser().parse_args(
        ["hub", "--allow-anonymous", "--webhook", url, "--webhook-secret", secret]
    )
    assert hub_config(args).webhooks == Webhooks(url, secret=secret)
    traits = RtkitExtension.class_traits()
    for name in ("max_batch", "batch_delay", "max_queue", "timeout", "retry_max"):
        assert traits[f"webhook_{name}"].default_value == webhook_default(name), name


def test_hub_default_knows_only_hub_config_fields() -> None:
    assert hub_default("limits") == DEFAULT_LIMITS
    with pytest.raises(KeyError):
        hub_default("no_such_option")


# -- the benchmarks' results file ------------------------------------------


def _results_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "benchmark_results", REPO / "benchmarks" / "results.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_sections_are_replaced_in_place_or_appended(tmp_path: Path) -> None:
    results = _results_module()
    path = tmp_path / "RESULTS.md"
    results.write_section("scaling", "## Scaling\n\nfirst\n", path)
    assert path.read_text() == (
        "# rtkit benchmark results\n\n<!-- scaling:begin -->\n## Scaling\n\nfirst\n"
        "<!-- scaling:end -->\n"
    )
    results.write_section("docs_presence", "## Docs", path)
    results.write_section("scaling", "## Scaling\n\nsecond", path)
    text = path.read_text()
    assert "first" not in text and text.count("<!-- scaling:begin -->") == 1
    assert text.index("## Scaling\n\nsecond") < text.index("<!-- docs_presence:begin -->")

    results.write_head("# rtkit benchmark results\n\nthe main run\n", path)
    assert path.read_text() == (
        "# rtkit benchmark results\n\nthe main run\n\n"
        "<!-- scaling:begin -->\n## Scaling\n\nsecond\n<!-- scaling:end -->\n\n"
        "<!-- docs_presence:begin -->\n## Docs\n<!-- docs_presence:end -->\n"
    )
    with pytest.raises(ValueError):
        results.write_section("two words", "x", path)


def test_the_recorded_results_have_one_pair_of_markers_per_section() -> None:
    results = _results_module()
    text = (REPO / "benchmarks" / "RESULTS.md").read_text()
    for name in ("jupyter-latency", "docs_presence", "widgets-fps", "scaling"):
        begin, end = results.markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1, name
        assert text.index(begin) < text.index(end), name
