"""What rtkit.bridges.amqp relies on in aio-pika and aiormq to close the
sockets aiormq leaves open when a broker drops a connection
(https://github.com/mosquito/aiormq/issues/231): aio-pika's ``Connection``
hands its ``kwargs`` to ``aiormq.connect``, aiormq's connection takes a
``transport_factory``, and its TCP/TLS factories make ``(reader, writer)``
through ``create(url, **kwargs)``."""

from __future__ import annotations

import asyncio
import inspect

import pytest

aio_pika = pytest.importorskip("aio_pika")
aiormq = pytest.importorskip("aiormq")

AMQP = "rtkit.bridges.amqp._recording_transport and AmqpSource.messages"


def test_aio_pika_passes_its_kwargs_to_aiormq() -> None:
    # From the source: an unconnected Connection left to the GC warns.
    init = inspect.getsource(aio_pika.Connection.__init__)
    assert "self.kwargs: Dict[str, Any] =" in init, f"aio_pika.Connection.kwargs ({AMQP})"
    source = inspect.getsource(aio_pika.Connection.connect)
    assert "**self.kwargs" in source, f"aio-pika no longer connects with its kwargs ({AMQP})"


def test_aiormq_takes_a_transport_factory() -> None:
    from aiormq.connection import TCPTransportFactory, TLSTransportFactory

    params = inspect.signature(aiormq.Connection.__init__).parameters
    assert "transport_factory" in params, f"aiormq.Connection(transport_factory=) ({AMQP})"
    for factory in (TCPTransportFactory, TLSTransportFactory):
        create = inspect.signature(factory.create)
        assert "url" in create.parameters, f"{factory.__name__}.create(url, ...) ({AMQP})"
        assert inspect.iscoroutinefunction(factory.create), factory


async def test_the_tcp_factory_returns_a_stream_pair() -> None:
    from aiormq.connection import TCPTransportFactory
    from yarl import URL

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await TCPTransportFactory().create(URL(f"amqp://127.0.0.1:{port}/"))
        assert isinstance(reader, asyncio.StreamReader) and isinstance(
            writer, asyncio.StreamWriter
        ), f"TCPTransportFactory.create() returns (reader, writer) ({AMQP})"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
