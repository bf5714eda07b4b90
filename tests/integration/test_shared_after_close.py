"""Writing to a shared document after the client closed.

The reported failure: ``params["alpha"] = 1`` after ``hub.close()`` raised
``ExceptionGroup ... RuntimeError: Event loop is closed`` and the local
value changed anyway. It raises ClientClosed, before anything changes."""

from __future__ import annotations

import pytest

import rtkit
import rtkit.aio
from rtkit.pytest_plugin import InProcessHub


def test_a_write_after_close_raises_client_closed_and_changes_nothing(
    shared_hub: InProcessHub,
) -> None:
    hub = rtkit.connect(shared_hub.url)
    params = hub.shared("params-closed")
    params["alpha"] = 0.5
    params.flush(timeout=10)
    hub.close()
    with pytest.raises(rtkit.ClientClosed, match="reading still works"):
        params["alpha"] = 1.0
    with pytest.raises(rtkit.ClientClosed):
        del params["alpha"]
    with pytest.raises(rtkit.ClientClosed):
        params.transaction()
    assert params["alpha"] == 0.5  # unchanged, and still readable
    assert params.to_dict() == {"alpha": 0.5}


async def test_the_async_twin_raises_client_closed_too(shared_hub: InProcessHub) -> None:
    client = await rtkit.aio.connect(shared_hub.url)
    params = await client.shared("params-closed-aio")
    params["beta"] = 2
    await client.close()
    with pytest.raises(rtkit.ClientClosed):
        params["beta"] = 3
    assert params["beta"] == 2
