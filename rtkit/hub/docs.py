"""Shared documents: Yjs documents (pycrdt) kept in sync through the hub.

Sync follows the Yjs protocol's two steps over Socket.IO events:

1. the client sends ``doc.sync`` with its state vector; the ack carries the
   update it lacks and the hub's state vector. From then on the connection
   is a *subscriber* of the document and receives every other client's
   ``doc.update``;
2. the client sends what the hub lacks (its update from the hub's state
   vector) as a ``doc.update``, and every later local edit the same way.

The hub keeps each document that has subscribers in memory as a pycrdt Doc,
rebuilt from the store (snapshot + updates since). A ``doc.update`` is
applied to it (which also proves it is a well-formed update), stored, acked
once stored, and sent to the other subscribers, encoded once for all.
Applying the same update twice is harmless, and updates commute, which is
what makes offline edits and reconnects simple: a client that reconnects
just runs the two steps again.

After ``doc_compact_every`` stored updates the store's updates are replayed
into a fresh Doc (on a worker thread) and replaced by its encoded state, so
loading a document costs one snapshot plus a bounded tail of updates.

Access: reading (sync) needs the token's subscribe patterns to match the
document's name, writing (update) its publish patterns, as for channels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import pycrdt

from ..config import HubConfig
from ..errors import BadRequest, Forbidden, HubError, TooLarge, Unavailable
from ..protocol import DOC_UPDATE, parse_doc_sync, parse_doc_update
from ..storage.base import DocRecord, Store
from .fanout import FanOut, encode_event

if TYPE_CHECKING:
    from .auth import Identity
    from .connection import Connection

log = logging.getLogger(__name__)

# A Rust panic inside pycrdt surfaces as pyo3's PanicException, which derives
# from BaseException. Malformed updates can trigger one; it must cost the
# sender a bad_request, not the hub its event loop.
_NOT_PANICS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


@dataclass(slots=True, eq=False)
class _OpenDoc:
    name: str
    doc: pycrdt.Doc[Any]
    subscribers: dict[str, None] = field(default_factory=dict)  # sids, in order
    inflight: int = 0  # updates applied here and not yet stored
    compacting: bool = False
    # Bytes the store holds for it (snapshot + updates), as Limits.max_doc_bytes
    # counts them; updates in flight are counted from before they are applied.
    size: int = 0


def stored_size(record: DocRecord) -> int:
    """A stored document's size in bytes: its snapshot and updates."""
    return len(record.snapshot or b"") + sum(len(u) for u in record.updates)


def build_doc(record: DocRecord, name: str = "") -> pycrdt.Doc[Any]:
    """A Doc holding a stored document (skipping updates it cannot read)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    parts = ([record.snapshot] if record.snapshot is not None else []) + record.updates
    for i, update in enumerate(parts):
        try:
            doc.apply_update(update)
        except BaseException as exc:
            if isinstance(exc, _NOT_PANICS):
                raise
            log.error("doc %r: skipping stored update %d that cannot be applied: %s", name, i, exc)
    return doc


class SharedDocs:
    """The hub's ``doc.sync`` / ``doc.update`` handlers and open documents."""

    def __init__(
        self,
        config: HubConfig,
        store: Store,
        fanout: FanOut,
        connections: Mapping[str, Connection],
    ) -> None:
        self._config = config
        self._limits = config.limits
        self._store = store
        self._fanout = fanout
        self._connections = connections
        self._docs: dict[str, _OpenDoc] = {}
        self._by_conn: dict[str, set[str]] = {}
        self._load_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.updates_stored = 0
        self.compactions = 0

    def status(self) -> dict[str, Any]:
        return {
            "docs": {name: len(od.subscribers) for name, od in self._docs.items()},
            "updates_stored": self.updates_stored,
            "compactions": self.compactions,
        }

    def open_docs(self) -> dict[str, tuple[int, int]]:
        """``{name: (subscribers, stored bytes)}`` of the open documents."""
        return {name: (len(od.subscribers), od.size) for name, od in self._docs.items()}

    async def stop(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for task in tasks:
            task.cancel()
        self._docs.clear()

    # -- requests -----------------------------------------------------------

    async def sync(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_doc_sync(payload)
        if not conn.identity.can_subscribe(req.doc):
            raise Forbidden(f"{conn.identity.user!r} may not read document {req.doc!r}")
        docs = self._by_conn.get(conn.sid, set())
        if req.doc not in docs and len(docs) >= self._limits.max_docs:
            raise Forbidden(f"document limit reached ({self._limits.max_docs} per connection)")
        conn.bucket.take_or_refuse()  # a sync costs the hub the document's size
        od = await self._open(req.doc)
        if self._connections.get(conn.sid) is not conn:
            self._maybe_evict(od)
            raise Unavailable("disconnected while syncing")
        if not conn.identity.can_subscribe(req.doc):
            # A token refresh took the right away while the document loaded.
            self._maybe_evict(od)
            raise Forbidden(f"{conn.identity.user!r} may not read document {req.doc!r}")
        try:
            update = od.doc.get_update(req.state_vector)
        except ValueError:
            self._maybe_evict(od)
            raise BadRequest("doc.sync: 'state_vector' is not a Yjs state vector") from None
        # No await from here to the return: the ack is queued on the socket
        # before any doc.update this subscription brings.
        od.subscribers[conn.sid] = None
        self._by_conn.setdefault(conn.sid, set()).add(req.doc)
        return {"ok": True, "update": update, "state_vector": od.doc.get_state()}

    async def update(self, conn: Connection, payload: Any) -> dict[str, Any]:
        req = parse_doc_update(payload)
        if not conn.identity.can_publish(req.doc):
            raise Forbidden(f"{conn.identity.user!r} may not write document {req.doc!r}")
        size = len(req.update)
        cap = self._limits.max_payload_bytes
        if size > cap:
            raise TooLarge(f"doc.update: the update is {size} bytes, over {cap}")
        conn.bucket.take_or_refuse()
        conn.byte_bucket.take_bytes_or_refuse(size, "doc.update")
        od = await self._open(req.doc)
        doc_cap = self._limits.max_doc_bytes
        if od.size + size > doc_cap:
            self._maybe_evict(od)
            raise TooLarge(
                f"doc.update: document {req.doc!r} would grow to {od.size + size} bytes, "
                f"over the hub's {doc_cap}-byte cap (max_doc_bytes, rtkit hub --max-doc-bytes); "
                "the update was not applied: start a new document or ask the operator"
            )
        # Counted before the await, so concurrent updates cannot all pass the cap.
        od.size += size
        stored = False
        od.inflight += 1
        try:
            await self._apply(od, req.update)
            try:
                count = await self._store.docs.append(req.doc, req.update)
            except Exception as exc:
                log.exception("doc %r: storing an update failed", req.doc)
                # The in-memory doc is ahead of the store now; rebuild it from
                # the store, and the client resends on its next sync.
                await self._reload(od)
                if isinstance(exc, HubError):
                    raise
                raise Unavailable(f"the store could not take the update: {exc}") from None
            stored = True
        finally:
            od.inflight -= 1
            if not stored:
                od.size = max(0, od.size - size)
        self.updates_stored += 1
        self._broadcast(od, req.update, skip=conn.sid)
        if count >= self._config.doc_compact_every and not od.compacting:
            od.compacting = True
            self._spawn(self._compact(od))
        self._maybe_evict(od)
        return {"ok": True}

    def remote_update(self, name: str, update: bytes) -> None:
        """An update another hub stored (through a shared store): apply it
        here if the document is open, and pass it to its subscribers."""
        od = self._docs.get(name)
        if od is None:
            return
        od.size += len(update)
        try:
            od.doc.apply_update(update)
        except Exception:
            log.warning("doc %r: a remote update failed to apply; reloading", name)
            self._spawn(self._reload(od))
        self._broadcast(od, update)

    def _broadcast(self, od: _OpenDoc, update: bytes, skip: str | None = None) -> None:
        """Send ``update`` to the document's subscribers (but ``skip``),
        encoded once for all of them."""
        packets: list[Any] | None = None
        for sid in od.subscribers:
            target = self._connections.get(sid) if sid != skip else None
            if target is None:
                continue
            if packets is None:
                packets = encode_event(DOC_UPDATE, {"doc": od.name, "update": update})
            self._fanout.send_to(sid, target.eio_sid, packets, target.frame_writer)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task the hub holds until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def revoke(self, sid: str, identity: Identity) -> list[str]:
        """Stop sending ``sid`` the documents ``identity`` may no longer read;
        their names."""
        names = self._by_conn.get(sid)
        if not names:
            return []
        revoked = sorted(name for name in names if not identity.can_subscribe(name))
        for name in revoked:
            names.discard(name)
            od = self._docs.get(name)
            if od is not None:
                od.subscribers.pop(sid, None)
                self._maybe_evict(od)
        if not names:
            del self._by_conn[sid]
        return revoked

    def disconnected(self, sid: str) -> None:
        for name in self._by_conn.pop(sid, ()):
            od = self._docs.get(name)
            if od is not None:
                od.subscribers.pop(sid, None)
                self._maybe_evict(od)

    # -- internals ----------------------------------------------------------

    async def _apply(self, od: _OpenDoc, update: bytes) -> None:
        try:
            od.doc.apply_update(update)
        except ValueError as exc:
            raise BadRequest(f"doc.update: not a Yjs update ({exc})") from None
        except BaseException as exc:
            if isinstance(exc, _NOT_PANICS):
                raise
            # pycrdt panicked halfway: the in-memory doc cannot be trusted.
            log.warning("doc %r: an update made pycrdt fail (%s); reloading the doc", od.name, exc)
            await self._reload(od)
            raise BadRequest("doc.update: the update is malformed") from None

    async def _open(self, name: str) -> _OpenDoc:
        od = self._docs.get(name)
        if od is not None:
            return od
        async with self._load_lock:
            od = self._docs.get(name)
            if od is not None:
                return od
            try:
                record = await self._store.docs.load(name)
            except HubError:
                raise
            except Exception as exc:
                log.exception("doc %r: loading failed", name)
                raise Unavailable(f"the store could not load document {name!r}: {exc}") from None
            if len(record.updates) > 64:
                doc = await anyio.to_thread.run_sync(build_doc, record, name)
            else:
                doc = build_doc(record, name)
            od = self._docs[name] = _OpenDoc(name, doc, size=stored_size(record))
            log.debug("doc %r loaded (%d updates after the snapshot)", name, len(record.updates))
            return od

    async def _reload(self, od: _OpenDoc) -> None:
        """Rebuild the in-memory copy from the store, subscribers kept."""
        try:
            record = await self._store.docs.load(od.name)
            od.doc = await anyio.to_thread.run_sync(build_doc, record, od.name)
            od.size = stored_size(record)
        except Exception:
            log.exception("doc %r: reloading failed; keeping the copy in memory", od.name)

    def _maybe_evict(self, od: _OpenDoc) -> None:
        idle = not od.subscribers and od.inflight == 0 and not od.compacting
        if idle and self._docs.get(od.name) is od:
            del self._docs[od.name]

    async def _compact(self, od: _OpenDoc) -> None:
        try:
            record = await self._store.docs.load(od.name)
            if record.updates:
                snapshot = await anyio.to_thread.run_sync(_encode_state, record, od.name)
                await self._store.docs.compact(od.name, snapshot, record.last_id)
                # The updates it replaced shrink to the snapshot; any stored
                # since stay counted.
                od.size = max(0, od.size - stored_size(record) + len(snapshot))
                self.compactions += 1
                log.debug(
                    "doc %r compacted %d updates into a %d-byte snapshot",
                    od.name,
                    len(record.updates),
                    len(snapshot),
                )
        except Exception:
            log.exception("doc %r: compaction failed; retrying after more updates", od.name)
        finally:
            od.compacting = False
            self._maybe_evict(od)


def _encode_state(record: DocRecord, name: str) -> bytes:
    return build_doc(record, name).get_update()
