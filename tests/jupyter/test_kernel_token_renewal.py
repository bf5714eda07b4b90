"""A kernel outlives its token: it renews it at the extension's kernel-token
endpoint and refreshes its hub connection in place."""

from __future__ import annotations

import json
from typing import Any

import pytest

import rtkit.aio
from rtkit.errors import Unauthorized

from .server import JupyterServer, Kernel

pytestmark = pytest.mark.jupyter

# The kernel token's lifetime: the hub ends a connection 5 s (its leeway)
# after that, so a kernel running 12 s outlives a token more than once.
TTL = 3

KERNEL_CODE = """
import json, os, time, rtkit
hub = rtkit.connect()
got = []
ch = hub.channel("kt.renew")
ch.subscribe(lambda msg: got.append(msg.seq))
sid = hub.aio.session.sid
sids = set()
for i in range(24):
    ch.publish(i)
    sids.add(hub.aio.session.sid)
    time.sleep(0.5)
hub.flush()
deadline = time.monotonic() + 10
while len(got) < 24 and time.monotonic() < deadline:
    time.sleep(0.05)
m = hub.metrics
print(json.dumps({
    "got": got, "sids": sorted(s or "" for s in sids), "sid": sid,
    "refreshes": m.token_refreshes, "reconnects": m.reconnects,
    "token": hub.aio.session.token, "first": os.environ["RTKIT_TOKEN"],
    "token_url": os.environ["RTKIT_TOKEN_URL"],
}))
hub.close()
"""


async def test_a_kernel_renews_its_token_and_keeps_its_connection(jupyter_factory: Any) -> None:
    server: JupyterServer = jupyter_factory(
        extra_args=[f"--RtkitExtension.kernel_token_ttl={TTL}"]
    ).start()
    kernel = Kernel.start(server)
    try:
        report = json.loads((await kernel.execute(KERNEL_CODE)).strip().splitlines()[-1])
    finally:
        kernel.shutdown()
    assert report["token_url"] == f"{server.hub_url}/kernel-token"
    assert report["got"] == list(range(1, 25))
    assert report["sids"] == [report["sid"]], "the kernel reconnected"
    assert report["reconnects"] == 0
    assert report["refreshes"] >= 3
    assert report["token"] != report["first"]
    # The endpoint takes nothing but a kernel token.
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        status, body = server.request(
            "rtkit/kernel-token", method="POST", token=None, cookies=False, headers=headers, body={}
        )
        assert status == 401, (status, body)
    # Once the kernel is shut down, every token of its line is refused.
    for token in (report["first"], report["token"]):
        with pytest.raises(Unauthorized):
            await rtkit.aio.connect(server.hub_url, token=token)
    status, body = server.request(
        "rtkit/kernel-token",
        method="POST",
        token=None,
        cookies=False,
        headers={"Authorization": f"Bearer {report['token']}"},
        body={},
    )
    assert status == 401 and "revoked" in json.dumps(body)
