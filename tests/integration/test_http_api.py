"""The hub's HTTP API (/api/...) on a real in-process hub: auth, bodies,
caps, idempotency, order towards Socket.IO subscribers, and every response
checked against the served OpenAPI document."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from rtkit.hub.auth import mint_token
from rtkit.protocol import MAX_PUBLISH_BATCH
from rtkit.pytest_plugin import HubProcess, InProcessHub

from .conftest import SECRET, Connect, token

API_KEY = "http-api-key-0123456789abcdef"
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def api_hub() -> Iterator[InProcessHub]:
    """A hub with a token secret and an API key."""
    hub = InProcessHub(secret=SECRET, extra_args=["--api-key", API_KEY]).start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)


class Checked:
    """An httpx client whose every response is validated against the
    hub's own OpenAPI document (path, method and status)."""

    def __init__(self, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
        self.client = client
        self.document = document
        self.registry: Registry[Any] = Registry().with_resource(
            "urn:rtkit-openapi", Resource.from_contents(document, default_specification=DRAFT202012)
        )
        self.checked: set[tuple[str, str, int]] = set()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.request(method, path, **kwargs)
        self.validate(method, path, response)
        return response

    def validate(self, method: str, path: str, response: httpx.Response) -> None:
        template = _template(self.document, path.split("?")[0].removeprefix("/api"))
        if template is None:
            assert response.status_code == 404, (path, response.text)
            _validator(self.registry, "#/components/schemas/Error").validate(response.json())
            return
        op = self.document["paths"][template].get(method.lower())
        if op is None:
            assert response.status_code == 405, (method, path, response.text)
            return
        status = str(response.status_code)
        assert status in op["responses"], f"{method} {path}: {status} not documented"
        pointer = "/".join(
            ["#/paths", template.replace("/", "~1"), method.lower(), "responses", status]
        )
        schema = _validator(self.registry, f"{pointer}/content/application~1json/schema")
        schema.validate(response.json())
        self.checked.add((template, method.upper(), response.status_code))


def _validator(registry: Registry[Any], pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": "urn:rtkit-openapi" + pointer}, registry=registry)


def _template(document: dict[str, Any], path: str) -> str | None:
    for template in document["paths"]:
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return str(template)
    return None


@pytest.fixture(scope="module")
def document(api_hub: InProcessHub) -> dict[str, Any]:
    """The hub's OpenAPI document, checked to be valid OpenAPI 3.1."""
    answer = httpx.get(f"{api_hub.url}/api/openapi.json", timeout=10)
    assert answer.status_code == 200
    served: dict[str, Any] = answer.json()
    assert served["openapi"].startswith("3.1")
    validate_openapi(served)
    return served


@pytest.fixture
async def api(api_hub: InProcessHub, document: dict[str, Any]) -> AsyncIterator[Checked]:
    async with httpx.AsyncClient(base_url=api_hub.url, timeout=10) as client:
        yield Checked(client, document)


KEY = {"X-API-Key": API_KEY}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_http_publishes_reach_a_socketio_subscriber_in_order(
    api_hub: InProcessHub, api: Checked, connect: Connect
) -> None:
    sub = await connect(api_hub.url, token=token("sub"))
    await sub.subscribe("http.order")
    one = await api.request(
        "POST", "/api/channels/http.order/messages", headers=KEY, json={"data": {"n": 0}}
    )
    assert one.status_code == 200 and one.json()["seq"] == 1
    batch = {"messages": [{"data": {"n": n}} for n in range(1, 301)]}
    for _ in range(2):
        answer = await api.request(
            "POST", "/api/channels/http.order/messages", headers=KEY, json=batch
        )
        assert answer.status_code == 200, answer.text
    # The same through /publish, with the channel in each message.
    mixed = {"messages": [{"channel": "http.order", "data": {"n": -1}}]}
    last = (await api.request("POST", "/api/publish", headers=KEY, json=mixed)).json()
    assert last["seqs"] == [602]
    await sub.wait_for_seq("http.order", 602)
    assert sub.seqs("http.order") == list(range(1, 603))
    data = [env["data"]["n"] for env in sub.received["http.order"]]
    assert data == [0, *range(1, 301), *range(1, 301), -1]
    assert {env["sender"] for env in sub.received["http.order"]} == {"api"}


async def test_tokens_grant_what_they_name(api: Checked) -> None:
    publisher = mint_token(SECRET, "pub", publish=["tok.*"], subscribe=[])
    reader = mint_token(SECRET, "reader", subscribe=["tok.*"])
    ok = await api.request(
        "POST", "/api/channels/tok.a/messages", headers=bearer(publisher), json={"data": 1}
    )
    assert ok.status_code == 200 and ok.json()["seq"] == 1
    # Publish grant only for tok.*: elsewhere forbidden, reads forbidden.
    other = await api.request(
        "POST", "/api/channels/other/messages", headers=bearer(publisher), json={"data": 1}
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    no_read = await api.request("GET", "/api/channels/tok.a/messages", headers=bearer(publisher))
    assert no_read.status_code == 403
    history = await api.request("GET", "/api/channels/tok.a/messages", headers=bearer(reader))
    assert history.status_code == 200
    assert [m["data"] for m in history.json()["messages"]] == [1]
    assert history.json()["messages"][0]["sender"] == "pub"
    no_write = await api.request(
        "POST", "/api/channels/tok.a/messages", headers=bearer(reader), json={"data": 2}
    )
    assert no_write.status_code == 403
    # Another token of the same user grants only what it names.
    narrow = mint_token(SECRET, "pub", subscribe=["tok.*"])
    same_user = await api.request(
        "POST", "/api/channels/tok.a/messages", headers=bearer(narrow), json={"data": 3}
    )
    assert same_user.status_code == 403
    # Channel list: only what the token may read; disconnect: API key only.
    listed = await api.request("GET", "/api/channels", headers=bearer(reader))
    assert set(listed.json()["channels"]) == {"tok.a"}
    assert listed.json()["channels"]["tok.a"]["seq"] == 1
    refused = await api.request("POST", "/api/users/pub/disconnect", headers=bearer(reader))
    assert refused.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-a-jwt"),
        bearer(mint_token("another-secret-0123456789abcdefghij", "eve", publish=["*"])),
        bearer(mint_token(SECRET, "late", publish=["*"], ttl=1, now=1_000_000)),
        {"X-API-Key": "wrong-key-0123456789abcdef"},
        {"Authorization": "apikey wrong-key-0123456789"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    ],
    ids=["none", "garbage", "wrong-secret", "expired", "wrong-key", "wrong-apikey-scheme", "basic"],
)
async def test_bad_credentials_are_401(api: Checked, headers: dict[str, str]) -> None:
    answer = await api.request(
        "POST", "/api/channels/bad.auth/messages", headers=headers, json={"data": 1}
    )
    assert answer.status_code == 401, answer.text
    assert answer.json()["ok"] is False
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert API_KEY not in answer.text


async def test_api_key_in_authorization_header(api: Checked) -> None:
    answer = await api.request(
        "POST",
        "/api/channels/key.scheme/messages",
        headers={"Authorization": f"apikey {API_KEY}"},
        json={"data": "x"},
    )
    assert answer.status_code == 200 and answer.json()["seq"] == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/publish", b"{not json", 400, "not JSON"),
        ("/api/publish", b"", 400, "JSON body"),
        ("/api/publish", b"[1, 2]", 400, "object"),
        ("/api/publish", b'{"channel": 5, "data": 1}', 400, "channel"),
        ("/api/publish", b'{"channel": "x"}', 400, "'data' is required"),
        ("/api/publish", b'{"channel": "x", "data": 1, "id": 7}', 400, "'id'"),
        ("/api/publish", b'{"messages": "no"}', 400, "messages"),
        ("/api/channels/x/messages", b'{"channel": "y", "data": 1}', 400, "path"),
        ("/api/channels/x/messages", b'{"data": NaN}', 400, "not JSON"),
        ("/api/nowhere", b"{}", 404, "no such endpoint"),
    ],
)
async def test_bad_bodies_are_400(
    api: Checked, path: str, body: bytes, status: int, says: str
) -> None:
    answer = await api.request(
        "POST", path, headers={**KEY, "Content-Type": "application/json"}, content=body
    )
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]["message"]


async def test_bad_queries_and_methods(api: Checked) -> None:
    bad = await api.request("GET", "/api/channels/q/messages?limit=ten", headers=KEY)
    assert bad.status_code == 400 and "integer" in bad.json()["error"]["message"]
    unknown = await api.request("GET", "/api/channels/q/messages?foo=1", headers=KEY)
    assert unknown.status_code == 400
    too_many = await api.request("GET", "/api/channels/q/messages?limit=100000", headers=KEY)
    assert too_many.status_code == 400
    wrong_method = await api.request("GET", "/api/publish", headers=KEY)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "bad_request"


async def test_oversize_batch_body_and_payload_are_413(api: Checked) -> None:
    batch = {"messages": [{"data": n} for n in range(MAX_PUBLISH_BATCH + 1)]}
    over = await api.request("POST", "/api/channels/big/messages", headers=KEY, json=batch)
    assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"
    body = b'{"channel": "big", "data": "' + b"x" * 1_100_000 + b'"}'
    huge = await api.request(
        "POST", "/api/publish", headers={**KEY, "Content-Type": "application/json"}, content=body
    )
    assert huge.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read up to the cap
        yield body[:600_000]
        yield body[600_000:]

    streamed = await api.client.post("/api/publish", headers=KEY, content=chunks())
    assert streamed.status_code == 413
    payload = await api.request(
        "POST", "/api/channels/big/messages", headers=KEY, json={"data": "y" * 300_000}
    )
    assert payload.status_code == 413
    # Nothing of these was stored.
    history = await api.request("GET", "/api/channels/big/messages", headers=KEY)
    assert history.json()["messages"] == []


async def test_idempotent_batch_resend_stores_once(api: Checked) -> None:
    batch = {"messages": [{"data": n, "id": f"order-{n}"} for n in range(5)]}
    first = await api.request("POST", "/api/channels/idem/messages", headers=KEY, json=batch)
    again = await api.request("POST", "/api/channels/idem/messages", headers=KEY, json=batch)
    assert first.json()["seqs"] == again.json()["seqs"] == [1, 2, 3, 4, 5]
    single = await api.request(
        "POST", "/api/channels/idem/messages", headers=KEY, json={"data": 0, "id": "order-0"}
    )
    assert single.json() == {"ok": True, "seq": 1, "ts": first.json()["ts"][0], "duplicate": True}
    history = await api.request("GET", "/api/channels/idem/messages?since=0", headers=KEY)
    assert [m["id"] for m in history.json()["messages"]] == [f"order-{n}" for n in range(5)]
    page = await api.request("GET", "/api/channels/idem/messages?since=1&limit=2", headers=KEY)
    assert [m["seq"] for m in page.json()["messages"]] == [2, 3]


async def test_a_refused_message_of_a_batch_is_answered_alone(api: Checked) -> None:
    batch = {"messages": [{"channel": "part.a", "data": 1}, {"channel": "", "data": 2}]}
    answer = await api.request("POST", "/api/publish", headers=KEY, json=batch)
    body = answer.json()
    assert answer.status_code == 200
    assert body["seqs"] == [1, None]
    assert body["errors"][0] is None and body["errors"][1]["code"] == "bad_request"


async def test_channels_members_and_disconnect(
    api_hub: InProcessHub, api: Checked, connect: Connect
) -> None:
    bob = await connect(api_hub.url, token=token("bob"))
    bob2 = await connect(api_hub.url, token=token("bob"))
    await bob.subscribe("watch.me")
    joined = await bob.call("presence.join", {"room": "lab", "state": {"cell": 3}})
    assert joined["ok"], joined
    channels = (await api.request("GET", "/api/channels", headers=KEY)).json()["channels"]
    assert channels["watch.me"]["subscribers"] == 1
    members = await api.request("GET", "/api/rooms/lab/members", headers=KEY)
    assert [(m["user"], m["state"]) for m in members.json()["members"]] == [("bob", {"cell": 3})]
    gone = await api.request("POST", "/api/users/bob/disconnect", headers=KEY)
    assert gone.json() == {"ok": True, "disconnected": 2}
    await bob.wait_disconnected()
    await bob2.wait_disconnected()
    nobody = await api.request("POST", "/api/users/nobody/disconnect", headers=KEY, json={})
    assert nobody.json()["disconnected"] == 0


async def test_rate_limit_is_429_with_retry_after() -> None:
    hub = InProcessHub(
        secret=SECRET,
        extra_args=["--api-key", API_KEY, "--publish-rate", "1", "--publish-burst", "2"],
    ).start()
    try:
        async with httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
            statuses = []
            for n in range(3):
                answer = await client.post(
                    "/api/channels/rl/messages", headers=KEY, json={"data": n}
                )
                statuses.append(answer.status_code)
            assert statuses == [200, 200, 429]
            assert answer.json()["error"]["code"] == "rate_limited"
            assert int(answer.headers["Retry-After"]) >= 1
            # The budget is the caller's (per user), not the hub's.
            other = await client.post(
                "/api/channels/rl/messages", headers=bearer(token("carol")), json={"data": 9}
            )
            assert other.status_code == 200
    finally:
        hub.terminate(timeout=5)


async def test_an_anonymous_hub_without_a_key_refuses_every_request(
    shared_hub: InProcessHub,
) -> None:
    async with httpx.AsyncClient(base_url=shared_hub.url, timeout=10) as client:
        answer = await client.post("/api/channels/anon/messages", json={"data": 1})
        assert answer.status_code == 401
        keyed = await client.post("/api/channels/anon/messages", headers=KEY, json={"data": 1})
        assert keyed.status_code == 401
        assert "--api-key" in keyed.json()["error"]["message"]


async def test_every_endpoint_is_documented_and_checked(api: Checked) -> None:
    """Each path and method of the document answers 200 with a body that
    its schema accepts (error bodies are checked by the tests above)."""
    reader = mint_token(SECRET, "doc", publish=["*"], subscribe=["*"])
    await api.request(
        "POST", "/api/publish", headers=bearer(reader), json={"channel": "d", "data": 1}
    )
    await api.request(
        "POST", "/api/channels/d/messages", headers=KEY, json={"messages": [{"data": 2}]}
    )
    await api.request("GET", "/api/channels/d/messages?limit=1", headers=KEY)
    await api.request("GET", "/api/channels", headers=KEY)
    await api.request("GET", "/api/status", headers=KEY)
    await api.request("GET", "/api/rooms/empty/members", headers=KEY)
    await api.request("POST", "/api/users/none/disconnect", headers=KEY)
    wanted = {
        (path, method.upper(), 200)
        for path, item in api.document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert wanted <= api.checked, wanted - api.checked


def test_readme_curl_example_works(api_hub: InProcessHub) -> None:
    """The README's curl lines, run as written against a hub with the
    README's API key variable set."""
    text = README.read_text()
    block = text.split("<!-- http-api-curl -->", 2)[1]
    commands = re.findall(r"^(curl .*?)(?<!\\)$", block.replace("\\\n", " "), flags=re.M)
    assert len(commands) >= 3, block
    env = {**os.environ, "RTKIT_API_KEY": API_KEY}
    outputs = []
    for command in commands:
        line = command.replace("http://127.0.0.1:8765", api_hub.url)
        done = subprocess.run(
            ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, (line, done.stderr)
        outputs.append(done.stdout)
    assert all('"ok":true' in out.replace(" ", "") for out in outputs), outputs


@pytest.mark.parametrize("server", ["tornado", "uvicorn"])
async def test_the_other_hosts_serve_the_api(rt_hub_factory: Any, server: str) -> None:
    """`rtkit hub --server tornado|uvicorn` mounts the same API."""
    hub: HubProcess = rt_hub_factory(
        secret=SECRET, extra_args=["--server", server, "--api-key", API_KEY]
    )
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as client:
        batch = {"messages": [{"data": n, "id": str(n)} for n in range(3)]}
        for _ in range(2):
            answer = await client.post("/api/channels/h%2Fx/messages", headers=KEY, json=batch)
            assert answer.json() == {"ok": True, "seqs": [1, 2, 3], "ts": answer.json()["ts"]}
        history = await client.get("/api/channels/h%2Fx/messages?since=1", headers=KEY)
        assert [m["data"] for m in history.json()["messages"]] == [1, 2]
        assert history.json()["messages"][0]["channel"] == "h/x"
        refused = await client.get("/api/channels", headers=bearer("bad"))
        assert refused.status_code == 401
        body = b'{"channel": "big", "data": "' + b"x" * 1_100_000 + b'"}'
        huge = await client.post("/api/publish", headers=KEY, content=body)
        assert huge.status_code == 413
        document = await client.get("/api/openapi.json")
        assert document.json()["openapi"] == "3.1.0"
