"""A real ``jupyter server`` subprocess on a free loopback port, and a kernel
driven through the server's REST and websocket APIs (what JupyterLab does)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import aiohttp

from rtkit._process import OutputLines, free_port, kill_group, start_group, stop_group

START_TIMEOUT = 60.0
EXECUTE_TIMEOUT = 60.0
TOKEN = "jupyter-test-token-" + uuid.uuid4().hex


class JupyterServer:
    """``python -m jupyter_server`` with its own data, runtime and config
    directories under ``home`` (so the default SQLite store lands there)."""

    def __init__(
        self,
        home: Path,
        *,
        base_url: str = "/user/ada/",
        token: str = TOKEN,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.extra_env = env or {}  # for the server and its kernels, after the rest
        self.base_url = base_url
        self.token = token
        self.port = free_port()
        self.extra_args = extra_args or []
        self.root = home / "root"
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []  # every run's output, restarts included
        self._output: OutputLines | None = None
        self.cookies = CookieJar()
        for sub in ("root", "data", "runtime", "config"):
            (home / sub).mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The server's base URL, ending in ``/``."""
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def hub_url(self) -> str:
        """What ``rtkit.connect`` takes for this server's hub."""
        return f"{self.url}rtkit"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RTKIT_", "JUPYTER"))}
        env.update(
            JUPYTER_DATA_DIR=str(self.home / "data"),
            JUPYTER_RUNTIME_DIR=str(self.home / "runtime"),
            JUPYTER_CONFIG_DIR=str(self.home / "config"),
            # A kernel's own jupyter paths and IPython profile stay inside too.
            IPYTHONDIR=str(self.home / "ipython"),
            JUPYTERLAB_SETTINGS_DIR=str(self.home / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(self.home / "lab-workspaces"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def lab_settings(self, plugin: str, settings: dict[str, Any]) -> None:
        """JupyterLab user settings, e.g. ``("@jupyterlab/x-extension:y", {...})``."""
        package, _, name = plugin.partition(":")
        path = self.home / "lab-settings" / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={self.base_url}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.log_level=INFO",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        return cmd + self.extra_args

    def start(self, timeout: float = START_TIMEOUT) -> JupyterServer:
        if self.running:
            raise RuntimeError("this server is already running")
        self.proc = start_group(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env(),
            cwd=self.root,
        )
        self._output = OutputLines(self.proc, lines=self.log)
        # Ready when rtkit says its hub runs (the extension starts after the
        # server listens); then the status API must answer.
        try:
            self._output.wait_for(lambda line: "rtkit" in line and "hub at" in line, timeout)
        except TimeoutError:
            self.kill()
            raise TimeoutError(
                f"jupyter server not ready in {timeout}s:\n{self.output()}"
            ) from None
        except RuntimeError:
            raise RuntimeError(f"jupyter server exited while starting:\n{self.output()}") from None
        status = self.get_json("rtkit/api/status")
        assert status["state"] == "running", status
        return self

    async def wait_for_log(self, *texts: str, within: float = 10.0) -> None:
        """Wait until the server has logged a line containing every one of
        ``texts`` (its output reaches us through a pipe, a little after the
        fact, even once the process has exited)."""
        output = self._output
        assert output is not None, "the server was never started"
        try:
            # since=0: any run's lines, the ones before a restart too.
            await asyncio.to_thread(
                output.wait_for, lambda line: all(t in line for t in texts), within, since=0
            )
        except (TimeoutError, RuntimeError):
            raise AssertionError(
                f"no log line with {texts!r} in {within}s:\n{self.output()}"
            ) from None

    def output(self) -> str:
        return "\n".join(self.log[-200:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (jupyter's clean shutdown: extensions, then kernels)."""
        if self.proc is None:
            return 0
        return stop_group(self.proc, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc)

    def restart(self) -> JupyterServer:
        self.stop()
        return self.start()

    # -- REST -------------------------------------------------------------------

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        cookies: bool = True,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON or text)``; ``token=None`` sends none. Keeps
        Jupyter's login cookie (unless ``cookies=False``), so the requests of
        a server are one Jupyter user throughout."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token == "default":
            token = self.token
        if token is not None:
            all_headers.setdefault("Authorization", f"token {token}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        jar = self.cookies if cookies else CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        try:
            with opener.open(req, timeout=30) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def get_json(self, path: str, **kwargs: Any) -> Any:
        status, body = self.request(path, **kwargs)
        assert status == 200, (status, body)
        return body

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.cookies)


class Kernel:
    """A kernel started through ``POST api/kernels``, run over its websocket."""

    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        self.server = server
        self.id = kernel_id

    @classmethod
    def start(cls, server: JupyterServer) -> Kernel:
        status, model = server.request("api/kernels", method="POST", body={"name": "python3"})
        assert status == 201, (status, model)
        return cls(server, model["id"])

    def shutdown(self) -> None:
        self.server.request(f"api/kernels/{self.id}", method="DELETE")

    async def execute(self, code: str) -> str:
        """Run ``code``; its stdout, or AssertionError with the traceback."""
        url = self.server.url.replace("http://", "ws://") + f"api/kernels/{self.id}/channels"
        headers = {"Authorization": f"token {self.server.token}"}
        msg_id = uuid.uuid4().hex
        request = {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "test",
                "session": uuid.uuid4().hex,
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False, "store_history": False},
            "channel": "shell",
            "buffers": [],
        }
        out: list[str] = []
        error: list[str] = []
        async with (
            asyncio.timeout(EXECUTE_TIMEOUT),
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers=headers) as ws,
        ):
            await ws.send_str(json.dumps(request))
            async for frame in ws:
                msg = json.loads(frame.data)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    error.append("\n".join(content["traceback"]))
                elif kind == "status" and content["execution_state"] == "idle":
                    break
        assert not error, "".join(error)
        return "".join(out)
