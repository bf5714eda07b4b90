"""Prometheus metrics of one hub, read at scrape time.

The hub keeps plain counters (:class:`~rtkit.hub.stats.HubStats`: ints, dicts of ints and
bucket lists, no locks, no library calls) on the paths where something
happens once per request or per connection; everything else (connections,
send queues, channels, presence rooms, shared documents, the shared store's
link) is read from the hub's own state when Prometheus scrapes. The fan-out
adds nothing per recipient: its counters were there before, and its
delivery latency is one observation per channel and flush.

:class:`MetricsEndpoint` answers ``GET /metrics`` for every host (the
standalone hub's aiohttp, tornado and ASGI apps, and
``{base_url}rtkit/metrics`` inside Jupyter) from a
:class:`~prometheus_client.CollectorRegistry` of its own, so several hubs in
one process never share or clash. prometheus-client is imported only then
(``pip install 'rtkit[metrics]'``)::

    endpoint = MetricsEndpoint(hub)
    answer = endpoint.handle({"authorization": "Bearer ..."})

Per-channel and per-document series exist only for the ``top`` busiest
(``HubConfig.metrics_top_channels``), so a hub with a million channels
still exposes a bounded number of series.
"""

from __future__ import annotations

import heapq
import hmac
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import orjson

from ..storage.url import redact_url
from .http_api import HttpResponse
from .stats import Histogram, HubStats

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .core import Hub

log = logging.getLogger(__name__)

_INSTALL_HINT = (
    "metrics need prometheus-client: pip install 'rtkit[metrics]' (or prometheus-client)"
)


def _top(items: Iterable[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    # nlargest: a scrape of a hub with a million channels sorts none of them.
    return heapq.nlargest(n, items, key=lambda kv: kv[1])


class HubCollector:
    """A prometheus-client collector that reads ``hub`` at scrape time."""

    def __init__(self, hub: Hub, top: int) -> None:
        self._hub = hub
        self._top = top

    def describe(self) -> list[Metric]:
        # Nothing to check at registration: each hub has its own registry.
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        hub = self._hub
        stats = hub.stats
        fanout = hub.fanout

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield InfoMetricFamily(
            "rtkit_hub",
            "The hub's version and store",
            value={"version": _version(), "store": redact_url(hub.store.url).split(":", 1)[0]},
        )
        yield gauge("rtkit_hub_start_time_seconds", "When the hub started (unix)", hub.started_at)
        yield gauge("rtkit_hub_ready", "1 if the hub takes requests", 1.0 if hub.ready else 0.0)

        # Connections.
        yield gauge("rtkit_connections", "Socket.IO connections open", hub.connection_count)
        yield gauge("rtkit_users", "Distinct users connected", hub.user_count)
        queues = [t for t in hub.sio.transports.values() if not t.closed]
        depths = [t.depth() for t in queues]
        yield gauge(
            "rtkit_send_queue_packets", "Packets waiting in connections' send queues", sum(depths)
        )
        yield gauge(
            "rtkit_send_queue_max_packets",
            "The longest send queue (packets) of any connection",
            max(depths, default=0),
        )
        yield gauge(
            "rtkit_send_queue_bytes",
            "Bytes waiting in connections' send queues",
            sum(t.pending_bytes() for t in queues),
        )

        # Deliveries (the fan-out's own counters).
        yield counter(
            "rtkit_delivered_messages",
            "Messages handed to subscribers' connections (one per message and subscriber)",
            fanout.messages_delivered,
        )
        yield counter(
            "rtkit_delivered_packets",
            "Packets of the messages event sent by the fan-out",
            fanout.packets_sent,
        )
        yield counter(
            "rtkit_direct_writes",
            "Fan-out packets written straight to the socket (the fast path)",
            fanout.direct_writes,
        )
        yield counter("rtkit_fanout_flushes", "Fan-out delivery rounds", fanout.flushes)
        if fanout.delivery_seconds is not None:
            yield _histogram_family(
                "rtkit_delivery_seconds",
                "From a message's hub timestamp to its socket write (oldest message of each "
                "channel's batch)",
                {"": fanout.delivery_seconds},
                None,
            )
        channels = fanout.channel_stats()
        yield gauge(
            "rtkit_channels", "Channels subscribed or published to since start", len(channels)
        )
        yield gauge(
            "rtkit_subscriptions",
            "Channel subscriptions of this hub's connections",
            sum(subs for subs, _ in channels.values()),
        )

        yield counter(
            "rtkit_slow_consumer_disconnects",
            "Connections dropped because they did not read what the hub sent",
            hub.slow_disconnects,
        )
        # Per channel, only the busiest (by messages published here, then by
        # subscribers): a bounded number of series however many channels.
        counts = hub.analytics.counts()
        none = (0, 0)
        busiest = heapq.nlargest(
            self._top,
            channels,
            key=lambda name: (counts.get(name, none)[0], channels[name][0]),
        )
        published = CounterMetricFamily(
            "rtkit_channel_published_messages",
            f"Messages published through this hub, per channel (the {self._top} busiest)",
            labels=["channel"],
        )
        published_bytes = CounterMetricFamily(
            "rtkit_channel_published_bytes",
            f"Payload bytes published through this hub, per channel (the {self._top} busiest)",
            labels=["channel"],
        )
        subscribers = GaugeMetricFamily(
            "rtkit_channel_subscribers",
            f"Subscribers on this hub, per channel (the {self._top} busiest)",
            labels=["channel"],
        )
        for name in busiest:
            messages, size = counts.get(name, none)
            published.add_metric([name], messages)
            published_bytes.add_metric([name], size)
            subscribers.add_metric([name], channels[name][0])
        yield published
        yield published_bytes
        yield subscribers

        if stats is not None:
            yield from self._counted(stats)

        yield from self._presence_and_docs()
        yield from self._store_link()
        yield from self._webhooks()

    def _counted(self, stats: HubStats) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily("rtkit_connects", "Connections accepted", value=stats.connects)
        family = CounterMetricFamily(
            "rtkit_connects_refused", "Connections refused, by error code", labels=["code"]
        )
        for code, n in sorted(stats.refused.items()):
            family.add_metric([code], n)
        yield family
        family = CounterMetricFamily(
            "rtkit_disconnects", "Connections closed, by reason", labels=["reason"]
        )
        for reason, n in sorted(stats.disconnects.items()):
            family.add_metric([reason], n)
        yield family
        family = CounterMetricFamily(
            "rtkit_requests",
            "Socket.IO requests answered, by event and ack code (ok or the error code)",
            labels=["event", "code"],
        )
        for (event, code), n in sorted(stats.request_counts().items()):
            family.add_metric([event, code], n)
        yield family
        yield CounterMetricFamily(
            "rtkit_published_messages",
            "Messages stored by publishes to this hub (Socket.IO and HTTP)",
            value=stats.published,
        )
        yield CounterMetricFamily(
            "rtkit_publish_duplicates",
            "Publishes of an id already stored (answered with the first seq)",
            value=stats.duplicates,
        )
        yield CounterMetricFamily(
            "rtkit_published_bytes",
            "Payload bytes of publishes accepted for storage",
            value=stats.published_bytes,
        )
        yield _histogram_family(
            "rtkit_publish_ack_seconds",
            "Hub-side time from a publish's arrival to its ack",
            {"": stats.publish_ack},
            None,
        )
        yield _histogram_family(
            "rtkit_store_seconds",
            "Store operations' latency, by operation",
            stats.store_seconds,
            "op",
        )
        family = CounterMetricFamily(
            "rtkit_store_errors", "Store operations that failed, by operation", labels=["op"]
        )
        for op, n in sorted(stats.store_errors.items()):
            family.add_metric([op], n)
        yield family

    def _presence_and_docs(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        hub = self._hub
        rooms = hub.presence.room_sizes()
        yield GaugeMetricFamily("rtkit_presence_rooms", "Rooms joined on this hub", len(rooms))
        yield GaugeMetricFamily(
            "rtkit_presence_members",
            "Members (users) of rooms, from this hub's connections",
            sum(members for _, members in rooms.values()),
        )
        yield GaugeMetricFamily(
            "rtkit_presence_connections",
            "Connections in rooms on this hub",
            sum(conns for conns, _ in rooms.values()),
        )
        yield CounterMetricFamily(
            "rtkit_presence_events", "Presence events sent", value=hub.presence.events_sent
        )
        docs = hub.docs.open_docs()
        yield GaugeMetricFamily("rtkit_docs_open", "Shared documents open on this hub", len(docs))
        yield GaugeMetricFamily(
            "rtkit_docs_bytes",
            "Stored size of the open shared documents (snapshot and updates)",
            sum(size for _, size in docs.values()),
        )
        yield GaugeMetricFamily(
            "rtkit_docs_subscribers",
            "Connections syncing shared documents",
            sum(subs for subs, _ in docs.values()),
        )
        sizes = GaugeMetricFamily(
            "rtkit_doc_bytes",
            f"Stored size of a shared document (the {self._top} largest)",
            labels=["doc"],
        )
        for name, size in _top(((n, float(s)) for n, (_, s) in docs.items()), self._top):
            sizes.add_metric([name], size)
        yield sizes
        yield CounterMetricFamily(
            "rtkit_doc_updates_stored", "Document updates stored", value=hub.docs.updates_stored
        )
        yield CounterMetricFamily(
            "rtkit_doc_compactions", "Document compactions", value=hub.docs.compactions
        )

    def _store_link(self) -> Iterator[Metric]:
        """The shared store's link (Redis), absent for an embedded store."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        link = self._hub.feed.status()
        if link is None:
            return
        yield GaugeMetricFamily(
            "rtkit_store_link_up", "1 while the link to the shared store is up", float(link["up"])
        )
        yield CounterMetricFamily(
            "rtkit_store_link_outages", "Times the shared store's link went down", link["outages"]
        )
        yield GaugeMetricFamily(
            "rtkit_store_watched_channels", "Channels followed in the shared store", link["watched"]
        )
        yield CounterMetricFamily(
            "rtkit_store_feed_messages",
            "Messages read from the shared store's feed",
            link["messages_read"],
        )

    def _webhooks(self) -> Iterator[Metric]:
        """The webhook sender's counters, when the hub sends webhooks."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        sender = self._hub.webhooks
        if sender is None:
            return
        figures = sender.status()
        for name, key, doc in (
            ("rtkit_webhook_events_sent", "sent", "Webhook events the receiver accepted"),
            ("rtkit_webhook_batches", "batches", "Webhook POSTs the receiver accepted"),
            (
                "rtkit_webhook_failed_attempts",
                "failed_attempts",
                "Webhook POSTs that failed and were retried",
            ),
            (
                "rtkit_webhook_events_dropped",
                "dropped",
                "Webhook events dropped from a full queue or at stop",
            ),
            (
                "rtkit_webhook_events_rejected",
                "rejected",
                "Webhook events in batches the receiver refused",
            ),
        ):
            yield CounterMetricFamily(name, doc, value=figures[key])
        yield GaugeMetricFamily(
            "rtkit_webhook_queue", "Webhook events waiting to be sent", figures["queued"]
        )
        yield GaugeMetricFamily(
            "rtkit_webhook_in_flight", "Webhook events in the POST under way", figures["in_flight"]
        )


def _histogram_family(
    name: str, doc: str, series: Mapping[str, Histogram], label: str | None
) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    for value, hist in sorted(series.items()):
        family.add_metric([value] if label else [], hist.cumulative(), hist.total)
    return family


def _version() -> str:
    from .. import __version__

    return __version__


def metrics_registry(hub: Hub) -> CollectorRegistry:
    """A registry of its own holding ``hub``'s collector and this process's
    CPU and memory (``process_*``)."""
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub, hub.config.metrics_top_channels))
    ProcessCollector(registry=registry)
    return registry


class MetricsEndpoint:
    """``GET /metrics`` of a hub, for any host: the host passes the request's
    headers (lower-case names) to :meth:`handle` and writes the answer back.

    ``token`` (else the hub's ``metrics_token``, else its API key) is asked
    for as ``Authorization: Bearer <token>`` (Prometheus's
    ``authorization`` setting) or ``X-API-Key``; without any, the endpoint is
    open. ``check_token=False``: the host authenticated the request itself
    (the Jupyter extension, with Jupyter's login).
    """

    def __init__(self, hub: Hub, *, token: str | None = None, check_token: bool = True) -> None:
        self.hub = hub
        config = hub.config
        self._token = (token or config.metrics_token or config.api_key) if check_token else None
        self._registry: CollectorRegistry | None = None
        self._missing: str | None = None
        try:
            self._registry = metrics_registry(hub)
        except ImportError as exc:
            self._missing = str(exc)
            log.warning("%s; /metrics answers 501 until it is installed", exc)

    @property
    def protected(self) -> bool:
        return self._token is not None

    def handle(self, headers: Mapping[str, str]) -> HttpResponse:
        if self._token is not None and not self._allowed(headers):
            return _json(
                401,
                "unauthorized",
                "send the metrics token as 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": 'Bearer realm="rtkit metrics"'},
            )
        if self._registry is None:
            return _json(501, "internal", self._missing or _INSTALL_HINT)
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(headers.get("accept", ""))
        return HttpResponse(
            200,
            encoder(self._registry),
            {"Content-Type": content_type, "Cache-Control": "no-store"},
        )

    def _allowed(self, headers: Mapping[str, str]) -> bool:
        assert self._token is not None
        expected = self._token.encode()
        given = headers.get("x-api-key")
        if given is None:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            if scheme.lower() not in {"bearer", "apikey"}:
                return False
            given = value.strip()
        return hmac.compare_digest(given.encode(), expected)


def _json(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> HttpResponse:
    body = orjson.dumps({"ok": False, "error": {"code": code, "message": message}})
    return HttpResponse(status, body, {"Content-Type": "application/json", **(headers or {})})
