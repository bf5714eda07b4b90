"""The deployment files in deploy/ that docs/deployment.md tells people to
install: the systemd unit runs a real ``rtkit hub`` invocation (and parses,
where systemd-analyze is there), and the TLS config for nginx puts a working
HTTPS endpoint in front of a hub, browser origin check included."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rtkit._process import free_port, start_group, stop_group, wait_for_port
from rtkit.cli import build_parser, hub_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "rtkit-hub.service"
TLS_CONF = REPO / "deploy" / "nginx-tls.conf"
SECRET = "s" * 43


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_unit_runs_a_real_hub_command() -> None:
    argv = shlex.split(unit_service()["ExecStart"])
    assert argv[0] == "/opt/rtkit/bin/rtkit", argv  # the venv the unit's header makes
    args = build_parser().parse_args(argv[1:])
    assert args.command == "hub"
    # RTKIT_SECRET comes from the EnvironmentFile (the CLI's default for --secret).
    assert "EnvironmentFile" in unit_service() and "--secret" not in argv
    args.secret = SECRET
    config = hub_config(args)  # what `rtkit hub` runs with: valid as a whole
    assert (config.host, config.port) == ("127.0.0.1", 8765)
    assert config.store == "sqlite:////var/lib/rtkit/hub.db"
    assert not config.allow_anonymous
    # The store lives in the directory systemd makes for the service.
    assert args.store.startswith(f"sqlite:////var/lib/{unit_service()['StateDirectory']}/")
    assert args.trusted_proxy == ["127.0.0.1"]  # nginx on the same machine


def test_systemd_unit_parses(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this rtkit.
    rtkit = Path(sys.executable).parent / "rtkit"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/rtkit/bin/rtkit", str(rtkit)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    # Unknown keys and bad values are warnings on stderr, with exit code 0.
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.fixture
def tls_nginx(tmp_path: Path, rt_hub_inprocess_factory: Any) -> Iterator[dict[str, Any]]:
    """deploy/nginx-tls.conf as nginx runs it, in front of a real hub: only
    the addresses, the certificate and nginx's own paths are this test's."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    openssl = shutil.which("openssl")
    if not os.path.exists(nginx) or openssl is None:
        pytest.fail("nginx and openssl are needed: apt-get install nginx openssl (make machine)")
    hub = rt_hub_inprocess_factory(secret=SECRET, extra_args=["--trusted-proxy", "127.0.0.1"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    http_port, https_port = free_port(), free_port()
    site = TLS_CONF.read_text()
    for old, new in (
        ("server 127.0.0.1:8765 ", f"server 127.0.0.1:{hub.port} "),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
        ("/etc/letsencrypt/live/rtkit.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/rtkit.example.org/privkey.pem", str(key)),
    ):
        assert old in site, old
        site = site.replace(old, new)
    (tmp_path / "rtkit.conf").write_text(site)
    # A minimal main config that includes it, as /etc/nginx/nginx.conf
    # includes conf.d/*.conf inside its http block.
    (tmp_path / "nginx.conf").write_text(
        textwrap.dedent(f"""\
            worker_processes 1;
            daemon off;
            pid {tmp_path}/nginx.pid;
            error_log {tmp_path}/error.log warn;
            events {{ worker_connections 64; }}
            http {{
                access_log off;
                client_body_temp_path {tmp_path}/client_body;
                proxy_temp_path {tmp_path}/proxy;
                include {tmp_path}/rtkit.conf;
            }}
            """)
    )
    proc = start_group([nginx, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    try:
        wait_for_port(https_port, proc)
        yield {"hub": hub, "url": f"https://127.0.0.1:{https_port}", "http_port": http_port,
               "cert": cert}  # fmt: skip
    finally:
        stop_group(proc, timeout=10)


def test_nginx_tls_config_serves_the_hub_over_https(
    tls_nginx: dict[str, Any], tmp_path: Path
) -> None:
    url, cert = tls_nginx["url"], tls_nginx["cert"]
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(f"{url}/healthz", context=context, timeout=10) as resp:
        assert resp.status == 200

    # The Python client through TLS, trusting the certificate as a user's
    # system would (SSL_CERT_FILE): publish, then read it back.
    token = subprocess.run(
        [sys.executable, "-m", "rtkit", "token", "--secret", SECRET, "--user", "ada",
         "--publish", "*", "--subscribe", "*"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    script = textwrap.dedent(f"""\
        import rtkit
        with rtkit.connect({url!r}, token={token!r}) as hub:
            ch = hub.channel("tls.check")
            seq = ch.publish({{"px": 1.5}})
            print(seq, [m.data for m in ch.history()])
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTKIT_")}
    env["SSL_CERT_FILE"] = str(cert)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 [{'px': 1.5}]"

    # Plain HTTP is sent to HTTPS.
    plain = urllib.request.Request(f"http://127.0.0.1:{tls_nginx['http_port']}/healthz")
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(plain, timeout=10)
    with redirect.value as response:
        assert response.code == 301
        assert response.headers["Location"].startswith("https://127.0.0.1")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


async def test_nginx_tls_config_lets_the_hubs_own_https_origin_in(
    tls_nginx: dict[str, Any],
) -> None:
    """A browser page served from the HTTPS origin connects (nginx passes the
    scheme and host the browser saw); a page of another site does not."""
    url, cert = tls_nginx["url"], tls_nginx["cert"]
    context = ssl.create_default_context(cafile=str(cert))
    ws_url = url.replace("https://", "wss://") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, ssl=context, headers={"Origin": url}) as ws:
            opened = await ws.receive_str(timeout=10)
            assert opened.startswith("0{"), opened  # Engine.IO's open packet
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with session.ws_connect(
                ws_url, ssl=context, headers={"Origin": "https://elsewhere.example"}
            ):
                pass
