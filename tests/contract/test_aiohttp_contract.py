"""What rtkit.hub.transport.aiohttp_websocket relies on in aiohttp, on a
real websocket over loopback: a prepared WebSocketResponse's request has the
asyncio transport, frames written to it arrive whole, and an oversize frame
is refused by ``receive`` (close code 1009)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtkit.hub.transport import websocket_text_frame
from rtkit.hub.transport.aiohttp_websocket import TransportFrameWriter

from .servers import websocket_server

AIOHTTP = "rtkit.hub.transport.aiohttp_websocket"
MAX_SIZE = 1000


@pytest.fixture
async def websocket_pair() -> Any:
    opened: asyncio.Future[tuple[web.Request, web.WebSocketResponse]] = (
        asyncio.get_running_loop().create_future()
    )
    received: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_SIZE, compress=False)
        await ws.prepare(request)
        opened.set_result((request, ws))
        while True:
            msg = await ws.receive()
            received.put_nowait(msg)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws
            if msg.type is aiohttp.WSMsgType.ERROR:
                return ws

    async with websocket_server(handle) as port:
        session = aiohttp.ClientSession()
        client = await session.ws_connect(f"ws://127.0.0.1:{port}/ws")
        request, ws = await asyncio.wait_for(opened, 10)
        try:
            yield request, ws, client, received
        finally:
            await client.close()
            await session.close()


async def test_frames_written_to_the_transport_arrive_whole(websocket_pair: Any) -> None:
    request, _ws, client, _received = websocket_pair
    transport = request.transport
    assert isinstance(transport, asyncio.Transport), f"web.Request.transport ({AIOHTTP})"
    assert transport.get_write_buffer_size() == 0 and not transport.is_closing()
    write = TransportFrameWriter(transport)
    for text in ("first", "y" * 70_000):
        assert write(websocket_text_frame(text.encode()))
        assert await client.receive_str(timeout=10) == text


async def test_receive_refuses_a_frame_over_the_size_limit(websocket_pair: Any) -> None:
    _request, _ws, client, received = websocket_pair
    await client.send_str("ok")
    msg = await asyncio.wait_for(received.get(), 10)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "ok")
    await client.send_str("z" * (MAX_SIZE + 1))
    msg = await asyncio.wait_for(received.get(), 10)
    # serve_websocket reads anything but str/bytes data as "closed or failed".
    assert not isinstance(msg.data, str | bytes), (
        f"an oversize frame now reaches receive() as data ({AIOHTTP}.serve_websocket)"
    )
