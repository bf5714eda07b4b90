"""Shared test configuration.

The hub fixtures (``rt_hub``, ``rt_hub_factory``) come from
``rtkit.pytest_plugin``, which the installed package registers as a pytest11
entry point. When rtkit is importable but not installed (a checkout on
``PYTHONPATH``), load the plugin here instead; loading it twice is an error.
"""

from __future__ import annotations

from importlib.metadata import entry_points

if not any(ep.value == "rtkit.pytest_plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["rtkit.pytest_plugin"]
