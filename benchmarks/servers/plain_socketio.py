"""Plain python-socketio reference server for the rtkit benchmarks.

The straightforward way a python-socketio user would write the two events
the benchmarks use, with nothing rtkit-specific: ``subscribe`` enters a room,
``publish`` numbers the message, emits ``messages`` with a one-element list to
the room and acks ``{"ok": true, "seq": n, "ts": t}``. Same namespace, path
and envelope shape as wire protocol v1 (shared/DESIGN.md), so one load
generator drives this server, the node socket.io server and the rtkit hub.

Hosts, picked by ``--server``: aiohttp (default), tornado, uvicorn (ASGI).
Every host negotiates permessage-deflate only when the client offers it
(aiohttp ``WebSocketResponse(compress=True)``, engineio's tornado handler,
uvicorn ``ws_per_message_deflate=True``); the load generator never offers it.

    python benchmarks/servers/plain_socketio.py --port 8765 --server tornado
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
import uuid
from typing import Any

import socketio

NAMESPACE = "/rtkit"


def make_server(async_mode: str, json_module: Any) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode=async_mode,
        cors_allowed_origins="*",
        json=json_module,
        logger=False,
        engineio_logger=False,
    )
    seqs: dict[str, int] = {}

    @sio.on("connect", namespace=NAMESPACE)
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    @sio.on("subscribe", namespace=NAMESPACE)
    async def subscribe(sid: str, req: dict[str, Any]) -> dict[str, Any]:
        channel = req["channel"]
        await sio.enter_room(sid, channel, namespace=NAMESPACE)
        return {"ok": True, "seq": seqs.get(channel, 0)}

    @sio.on("publish", namespace=NAMESPACE)
    async def publish(sid: str, req: dict[str, Any]) -> dict[str, Any]:
        channel = req["channel"]
        seq = seqs.get(channel, 0) + 1
        seqs[channel] = seq
        ts = time.time()
        envelope = {
            "channel": channel,
            "seq": seq,
            "ts": ts,
            "id": req.get("id") or uuid.uuid4().hex,
            "sender": sid,
            "data": req.get("data"),
        }
        await sio.emit("messages", [envelope], room=channel, namespace=NAMESPACE)
        return {"ok": True, "seq": seq, "ts": ts}

    return sio


async def serve_aiohttp(host: str, port: int, json_module: Any, stop: asyncio.Event) -> None:
    from aiohttp import web

    sio = make_server("aiohttp", json_module)
    app = web.Application()
    sio.attach(app, socketio_path="socket.io")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_tornado(host: str, port: int, json_module: Any, stop: asyncio.Event) -> None:
    import tornado.web

    sio = make_server("tornado", json_module)
    app = tornado.web.Application([(r"/socket.io/", socketio.get_tornado_handler(sio))])
    server = app.listen(port, address=host)
    try:
        await stop.wait()
    finally:
        server.stop()


async def serve_uvicorn(host: str, port: int, json_module: Any, stop: asyncio.Event) -> None:
    import uvicorn

    sio = make_server("asgi", json_module)
    app = socketio.ASGIApp(sio, socketio_path="socket.io")
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    # uvicorn installs its own signal handlers only in server.run(); serve()
    # leaves them to us, so SIGTERM from run.py reaches `stop` below.
    task = asyncio.create_task(server.serve())
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=5)


HOSTS = {"aiohttp": serve_aiohttp, "tornado": serve_tornado, "uvicorn": serve_uvicorn}


async def main_async(args: argparse.Namespace) -> None:
    if args.json == "orjson":
        import orjson

        class _OrjsonModule:
            """python-socketio calls json.dumps(obj, separators=...) and json.loads(s)."""

            @staticmethod
            def dumps(obj: Any, **_: Any) -> str:
                return orjson.dumps(obj).decode()

            @staticmethod
            def loads(s: str | bytes, **_: Any) -> Any:
                return orjson.loads(s)

        json_module: Any = _OrjsonModule
    else:
        json_module = json
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await HOSTS[args.server](args.host, args.port, json_module, stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--server", choices=sorted(HOSTS), default="aiohttp")
    parser.add_argument("--json", choices=["json", "orjson"], default="json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
