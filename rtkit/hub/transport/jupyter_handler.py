"""Telling a jupyter_server handler who made its request.

jupyter_server's ``JupyterHandler.prepare`` asks the IdentityProvider, which
knows Jupyter's cookie and tokens but not rtkit's kernel tokens. A request
carrying a kernel token gets its user set here instead, the way
``IdentityProvider.get_user`` leaves it: ``_jupyter_current_user`` (which
``check_xsrf_cookie`` and ``current_user`` read) and
``_token_authenticated`` (which ``IdentityProvider.is_token_authenticated``
reads; a credential in a header cannot be forged cross-site, so Jupyter
skips the XSRF check). tests/contract/test_jupyter_server_contract.py
checks both on a real handler. Imported by the Jupyter extension only.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.identity import User


def authenticate_by_header_token(handler: Any, user: User) -> None:
    """Make ``user`` the current user of ``handler``'s request, authenticated
    by a token sent in a header (so no XSRF check applies)."""
    handler.current_user = user
    handler._jupyter_current_user = user
    handler._token_authenticated = True
