"""Many hubs behind nginx, for trying a cluster out on one machine.

``rtkit cluster --hubs 3 --port 8765 --store redis://127.0.0.1:6379/0`` starts
three ``rtkit hub`` processes on free loopback ports, all on one Redis, and
nginx on ``--port`` in front of them. Clients use the websocket transport
(rtkit's client always does), so any hub can serve any connection and nginx
needs no sticky sessions: a client whose hub dies reconnects through nginx
and lands on another one, which resumes it from its last seq.

:func:`nginx_config` writes the configuration; ``deploy/nginx.conf`` in the
repository is its output for three hubs, to adapt for a real deployment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from ._process import find_program, start_group, stop_groups, wait_for_port
from ._process import free_port as free_port  # where rtkit.demo and benchmarks find it
from .errors import ConfigurationError

__all__ = ["nginx_config", "run_cluster"]


def nginx_config(listen: str, hubs: Sequence[str], workdir: str) -> str:
    """An nginx configuration that balances websocket connections over
    ``hubs`` (``host:port`` each) and listens on ``listen`` (``host:port``).

    nginx (open source) has no active health checks; a hub that is gone
    refuses connections, and ``proxy_next_upstream`` then tries the next one,
    so a reconnecting client never waits for a dead hub.
    """
    servers = "\n".join(f"        server {hub} max_fails=1 fail_timeout=2s;" for hub in hubs)
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# rtkit hubs behind nginx: websocket transport, no sticky sessions.
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
{temp}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

    upstream rtkit_hubs {{
{servers}
    }}

    server {{
        listen {listen};

        location / {{
            proxy_pass http://rtkit_hubs;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # A websocket lives for hours; the hub's own heartbeat finds dead ones.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_buffering off;
        }}
    }}
}}
"""


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    try:
        wait_for_port(port, proc, within=20.0)
    except (RuntimeError, TimeoutError) as exc:
        raise ConfigurationError(str(exc)) from None


def run_cluster(hubs: int, port: int, store: str, hub_args: Sequence[str] = ()) -> int:
    """Start ``hubs`` hubs and nginx on ``port``; stop them all on SIGINT/SIGTERM."""
    nginx = find_program("nginx")
    if nginx is None:
        raise ConfigurationError("rtkit cluster needs nginx (Debian: apt-get install nginx)")
    if not store.startswith(("redis://", "rediss://")):
        raise ConfigurationError("hubs of a cluster share a redis:// store")
    procs: list[subprocess.Popen[bytes]] = []
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with tempfile.TemporaryDirectory(prefix="rtkit-cluster-") as workdir:
        try:
            ports = [free_port() for _ in range(hubs)]
            # The store URL may hold a password: pass it in the environment,
            # which other users cannot read, rather than in argv, which ps shows.
            env = {**os.environ, "RTKIT_STORE": store}
            for hub_port in ports:
                cmd = [sys.executable, "-m", "rtkit", "hub", "--port", str(hub_port)]
                # Every client reaches the hubs through nginx on 127.0.0.1:
                # its X-Forwarded-For names the client for per-address caps.
                cmd += ["--trusted-proxy", "127.0.0.1"]
                procs.append(start_group([*cmd, *hub_args], env=env))
            for hub_port, proc in zip(ports, procs, strict=True):
                _wait_listening(hub_port, proc)
            conf = os.path.join(workdir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(
                    nginx_config(f"127.0.0.1:{port}", [f"127.0.0.1:{p}" for p in ports], workdir)
                )
            procs.append(start_group([nginx, "-c", conf, "-p", workdir]))
            _wait_listening(port, procs[-1])
            print(
                f"rtkit cluster: {hubs} hubs on ports {ports}, nginx on http://127.0.0.1:{port}",
                flush=True,
            )
            while not stop and all(p.poll() is None for p in procs):
                time.sleep(0.2)  # until a signal sets `stop` or a process exits
        finally:
            # nginx is asked first: it stops taking connections while the hubs drain theirs.
            stop_groups(procs[::-1], timeout=10)
    return 0
