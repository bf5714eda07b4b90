"""Shared test configuration.

The hub fixtures (``rt_hub``, ``rt_hub_factory``, ``rt_redis_prefix``) come
from ``rtkit.pytest_plugin``. Installing rtkit does not register it with
pytest (it would change other projects' test runs); a test suite asks for
it, as this one does here.
"""

pytest_plugins = ["rtkit.pytest_plugin"]
