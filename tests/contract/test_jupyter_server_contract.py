"""What rtkit.hub.transport.jupyter_handler relies on in jupyter_server, on a
real JupyterHandler: a request whose user the handler sets the way
IdentityProvider.get_user does (``_jupyter_current_user``,
``_token_authenticated``) counts as that user, token-authenticated, and so
passes the XSRF check that a cookie-authenticated POST would have to pass."""

from __future__ import annotations

from typing import Any

import pytest
import tornado.web
from jupyter_server.auth.identity import IdentityProvider, User
from jupyter_server.base.handlers import JupyterHandler
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from rtkit.hub.transport.jupyter_handler import authenticate_by_header_token

JUPYTER = "rtkit.hub.transport.jupyter_handler"


class _Connection:
    """The one thing RequestHandler asks of its HTTP connection up front."""

    def set_close_callback(self, callback: Any) -> None:
        pass


def _post_handler() -> JupyterHandler:
    app = tornado.web.Application(
        identity_provider=IdentityProvider(token="jupyter-token"),
        xsrf_cookies=True,
        cookie_secret=b"x" * 32,
    )
    request = HTTPServerRequest(
        start_line=RequestStartLine(
            "POST", "/rtkit/socket.io/?EIO=4&transport=polling", "HTTP/1.1"
        ),
        headers=HTTPHeaders({"Host": "localhost:8888"}),
        connection=_Connection(),  # type: ignore[arg-type]
    )
    return JupyterHandler(app, request)


def test_a_header_token_user_is_the_current_user_and_token_authenticated() -> None:
    handler = _post_handler()
    ada = User(username="ada", name="Ada", display_name="Ada", initials="A", color="#123456")
    authenticate_by_header_token(handler, ada)
    assert handler.current_user is ada, f"JupyterHandler.current_user ({JUPYTER})"
    assert handler.token_authenticated is True, (
        f"IdentityProvider.is_token_authenticated no longer reads _token_authenticated ({JUPYTER})"
    )
    # Raises HTTPError when the XSRF check applies (see the control below).
    handler.check_xsrf_cookie()


def test_without_the_token_mark_the_xsrf_check_applies() -> None:
    # The control: a user set as JupyterHandler.prepare sets a cookie login's
    # (current_user and _jupyter_current_user) must pass the XSRF check, and
    # this POST carries no XSRF token.
    handler = _post_handler()
    ada = User(username="ada")
    handler.current_user = handler._jupyter_current_user = ada
    assert handler.token_authenticated is False
    with pytest.raises(tornado.web.HTTPError):
        handler.check_xsrf_cookie()
