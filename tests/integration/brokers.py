"""Brokers for the bridge tests: Mosquitto, NATS (with JetStream), RabbitMQ
and PostgreSQL started by the test on free loopback ports, so nothing
depends on system services, and restartable on the same port."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from rtkit._process import (
    find_program,
    free_port,
    kill_group,
    start_group,
    stop_group,
    wait_for_port,
)


def _binary(name: str) -> str:
    path = find_program(name)
    if path is None:
        # scripts/setup-test-machine installs it (make test); only a machine
        # set up some other way lacks it.
        pytest.skip(f"{name} is not installed (scripts/setup-test-machine installs it)")
    return path


class Broker:
    """A broker process on ``port``; :meth:`restart` keeps the port."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
        stop_signal: int = signal.SIGTERM,
        start_within: float = 20.0,
        ready: Callable[[], bool] | None = None,
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        self.argv, self.port = argv, port
        self.env, self.preexec_fn, self.stop_signal = env, preexec_fn, stop_signal
        self.start_within, self.ready, self.cleanup = start_within, ready, cleanup
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> Broker:
        self.proc = start_group(
            self.argv,
            env=self.env,
            preexec_fn=self.preexec_fn,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, within=self.start_within)
        # Some accept connections before they serve them (PostgreSQL's
        # "the database system is starting up").
        deadline = time.monotonic() + self.start_within
        while self.ready is not None and not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[0]} did not become ready")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            if self.stop_signal != signal.SIGTERM and self.proc.poll() is None:
                # PostgreSQL's SIGTERM waits for its clients to leave; SIGINT
                # is its "fast" shutdown (what a service restart does).
                self.proc.send_signal(self.stop_signal)
            stop_group(self.proc, timeout=15)
            self.proc = None

    def close(self) -> None:
        """Stop it and remove what it kept on disk."""
        self.stop()
        if self.cleanup is not None:
            self.cleanup()

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def mosquitto() -> Broker:
    port = free_port()
    return Broker([_binary("mosquitto"), "-p", str(port)], port)


def nats_server(store_dir: Path) -> Broker:
    port = free_port()
    argv = [
        _binary("nats-server"),
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-sd",
        str(store_dir),
    ]
    return Broker(argv, port)


def rabbitmq() -> Broker:
    """A RabbitMQ node of its own (name, ports, data and logs in a temp dir).

    It starts in 5-10 s; guest/guest may connect from loopback. Call
    :meth:`Broker.close` to stop it and remove its directory."""
    script = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # /usr/sbin's wrapper insists on root
    if not Path(script).exists():
        pytest.skip("rabbitmq-server is not installed (scripts/setup-test-machine installs it)")
    home = Path(tempfile.mkdtemp(prefix="rtkit-rabbitmq-"))
    (home / "enabled_plugins").write_text("[].\n")
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(home),  # the Erlang cookie goes there
        "RABBITMQ_NODENAME": f"rtkit-test-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(home / "pid"),
    }
    return Broker(
        [script],
        port,
        env=env,
        start_within=60,
        cleanup=lambda: shutil.rmtree(home, ignore_errors=True),
    )


def postgres() -> Broker:
    """A PostgreSQL cluster of its own (initdb in a temp dir, trust auth,
    user ``postgres``, database ``postgres``), on a free port.

    PostgreSQL refuses to run as root: as root the cluster belongs to the
    ``postgres`` user. Call :meth:`Broker.close` to stop it and remove it."""
    bindir = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
    if bindir is None:
        pytest.skip("postgresql is not installed (scripts/setup-test-machine installs it)")
    root = Path(tempfile.mkdtemp(prefix="rtkit-postgres-"))
    preexec_fn: Callable[[], Any] | None = None
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)

        def as_postgres() -> None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        preexec_fn = as_postgres
    data = root / "data"
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        [f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-N", "-E", "UTF8"],
        env=env,
        preexec_fn=preexec_fn,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=True,
    )
    port = free_port()
    argv = [f"{bindir}/postgres", "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
    argv += ["-k", str(root), "-c", "fsync=off"]

    def ready() -> bool:
        isready = [f"{bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(isready, check=False).returncode == 0

    return Broker(
        argv,
        port,
        env=env,
        preexec_fn=preexec_fn,
        stop_signal=signal.SIGINT,
        ready=ready,
        cleanup=lambda: shutil.rmtree(root, ignore_errors=True),
    )
