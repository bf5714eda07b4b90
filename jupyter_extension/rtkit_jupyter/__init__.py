"""rtkit inside jupyter-server: the hub as a server extension.

Installed with rtkit (``pip install rtkit[jupyter]``) and enabled by the
``jupyter_server_config.d/rtkit_jupyter.json`` the wheel ships. It serves the
hub at ``{base_url}rtkit/socket.io/`` and its status at
``{base_url}rtkit/api/status``, and gives kernels ``RTKIT_URL`` and
``RTKIT_TOKEN``. Options: :class:`RtkitExtension`.
"""

from __future__ import annotations

from typing import Any

from rtkit import __version__

from .app import RtkitExtension

__all__ = ["RtkitExtension", "__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "rtkit_jupyter", "app": RtkitExtension}]
