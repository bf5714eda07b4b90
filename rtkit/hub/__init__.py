"""The host-agnostic hub core."""

from __future__ import annotations

from .auth import AnonymousAuthenticator, Authenticator, Identity, TokenAuthenticator, mint_token
from .core import Hub

__all__ = [
    "AnonymousAuthenticator",
    "Authenticator",
    "Hub",
    "Identity",
    "TokenAuthenticator",
    "mint_token",
]
