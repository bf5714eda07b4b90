"""Shared documents on the client: a pycrdt Doc kept in sync through the hub.

:class:`SharedDoc` is a dict-like view of the Doc's ``"state"`` Map; the Doc
itself (``.doc``) holds any other shared types (arrays, text) next to it.

- Local edits apply at once. Each committed transaction yields a Yjs update
  (``Doc.observe``); updates wait in a queue and are sent as ``doc.update``
  requests, one in flight at a time, everything that queued meanwhile merged
  into the next (so a burst of edits costs a few requests, not thousands).
- On every (re)connection the Yjs sync steps run again: ``doc.sync`` with the
  local state vector returns what the hub has that we lack, and the hub's
  state vector; then everything the hub lacks goes out as one update. That
  covers edits made offline and updates lost with a connection, so nothing
  needs to be remembered between connections but the Doc itself.
- Remote updates are applied with a thread-local marker, so the local-update
  observer does not send them back, and ``observe`` callbacks hear only them.

Threads: the blocking client edits the Doc from the caller's thread while
its I/O thread applies remote updates. pycrdt shares one "current
transaction" per Doc between threads; :class:`ThreadSafeDoc` makes it
per-thread, so each thread's transaction takes the Doc's lock and the two
never mix.

:class:`Docs` is the client's registry of documents: it routes the hub's
``doc.update`` events to each document, marks them unsynced when a
connection drops and syncs them again after every reconnect, all through
the :class:`~rtkit.client._session.Session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import pycrdt

from ..errors import (
    AckTimeout,
    ClientClosed,
    HubError,
    NotConnected,
    RateLimited,
    RtkitError,
    Unavailable,
    error_for_code,
)
from ..protocol import DOC_SYNC, DOC_UPDATE, SHARED_MAP, validate_name
from ._session import ConnectionLost, Session

__all__ = ["Docs", "SharedCallback", "SharedChange", "SharedDoc", "ThreadSafeDoc"]

log = logging.getLogger(__name__)

# Queued local updates are merged into requests of about this size at most
# (below the hub's default 256 KiB cap; a single larger edit goes alone).
MAX_UPDATE_BATCH: Final = 128 * 1024
# What Doc.get_update() returns when there is nothing to send.
_EMPTY_UPDATE: Final = b"\x00\x00"
# pyo3 reports a Rust panic as a BaseException; a bad remote update must not
# take the client's event loop down with it.
_NOT_PANICS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)

SharedCallback = Callable[["SharedChange"], Any]


@dataclass(frozen=True, slots=True)
class SharedChange:
    """What a remote update changed, as ``observe`` callbacks get it.

    ``keys`` are the top-level keys of the shared map that changed (their
    value, or something nested in it); empty when only other root types of
    the Doc changed.
    """

    name: str
    keys: frozenset[str]


class ThreadSafeDoc(pycrdt.Doc[Any]):
    """A pycrdt Doc that several threads may edit.

    pycrdt keeps the current transaction on the Doc, so a thread that starts
    one while another thread's is open would join it. Here it is kept per
    thread: each thread opens its own, and ``allow_multithreading`` makes the
    second wait on the Doc's lock until the first commits.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._per_thread = threading.local()
        self._thread_lock = threading.RLock()
        super().__init__(allow_multithreading=True, **kwargs)

    def transaction(self, origin: Any = None) -> Any:
        return _HeldTransaction(self._thread_lock, super().transaction(origin))

    @property
    def _txn(self) -> Any:
        return getattr(self._per_thread, "txn", None)

    @_txn.setter
    def _txn(self, value: Any) -> None:
        self._per_thread.txn = value


class _HeldTransaction:
    """A pycrdt transaction entered and left under its doc's thread lock.

    pycrdt (0.14) releases its own lock before it drops the transaction it
    committed, so a thread waiting on that lock can try to open its own
    while the first is still alive, and fails with "Already in a
    transaction" (seen under load, about one run in 300 of two threads
    each making 500 edits). A lock of our own, held until pycrdt's exit
    has finished, closes that window; being reentrant, it lets a thread
    nest transactions as pycrdt allows."""

    __slots__ = ("_lock", "_txn")

    def __init__(self, lock: threading.RLock, txn: pycrdt.Transaction) -> None:
        self._lock = lock
        self._txn = txn

    def __enter__(self) -> pycrdt.Transaction:
        self._lock.acquire()
        try:
            return self._txn.__enter__()
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._txn.__exit__(*exc_info)
        finally:
            self._lock.release()

    async def __aenter__(self) -> pycrdt.Transaction:
        self._lock.acquire()
        try:
            return await self._txn.__aenter__()
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._txn.__aexit__(*exc_info)
        finally:
            self._lock.release()


class SharedDoc(MutableMapping[str, Any]):
    """A shared document: a dict-like view of a pycrdt Map, synced through the hub.

    Get one with ``await hub.shared(name)``. Reads and writes act on the
    local copy at once; writes reach the other clients through the hub, and
    edits made while offline are merged on reconnect. ``.doc`` is the pycrdt
    Doc, for arrays and text next to the map::

        >>> params = await hub.shared("params")
        >>> params["alpha"] = 0.5
        >>> tasks = params.doc.get("tasks", type=pycrdt.Array)
        >>> tasks.append("write the report")
        >>> params.observe(lambda change: print("remote change of", change.keys))

    Values follow pycrdt: numbers come back as floats, nested ``pycrdt.Map``,
    ``Array`` or ``Text`` values as live shared types.
    """

    def __init__(self, docs: Docs, name: str) -> None:
        self._docs = docs
        self._session = docs.session
        self.name = name
        self.doc: pycrdt.Doc[Any] = ThreadSafeDoc()
        """The pycrdt Doc: get other shared types with ``doc.get(name, type=...)``."""
        self.map: pycrdt.Map[Any] = self.doc.get(SHARED_MAP, type=pycrdt.Map)
        """The pycrdt Map this object is a view of."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._local = threading.local()  # .remote: applying a remote update
        self._pending: list[bytes] = []
        self._synced = False  # on the current connection
        self._sending = False
        self._sync_token = 0
        self._idle = asyncio.Event()
        self._error: HubError | None = None
        self._observers: list[SharedCallback] = []
        self._changed: set[str] | None = None
        self._closed = False
        self._doc_subscription = self.doc.observe(self._on_transaction)
        self._map_subscription = self.map.observe_deep(self._on_deep_change)
        self.updates_sent = 0
        self.updates_received = 0
        docs.register(
            self,
            on_update=self._on_remote_update,
            sync=self._sync,
            is_open=self._is_open,
            connection_lost=self._connection_lost,
            wake=self._idle.set,
        )

    def __repr__(self) -> str:
        state = "synced" if self._synced else "not synced"
        return f"<rtkit.aio.SharedDoc {self.name!r} {state} keys={list(self.map.keys())[:8]}>"

    # -- the mapping ------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.map[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_writable()
        self.map[key] = value

    def __delitem__(self, key: str) -> None:
        self._check_writable()
        del self.map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.map.keys()))

    def __len__(self) -> int:
        return len(self.map)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.map

    def to_dict(self) -> dict[str, Any]:
        """The map as plain Python values (nested shared types converted)."""
        return self.map.to_py() or {}

    def transaction(self) -> Any:
        """``with shared.transaction(): ...`` makes several edits one update
        (and keeps other threads out meanwhile). Do not await inside it."""
        self._check_writable()
        return self.doc.transaction()

    def _check_writable(self) -> None:
        """Refuse an edit the hub would never get, before it changes anything."""
        if self._session.state == "closed":
            raise ClientClosed(
                f"shared document {self.name!r}: the client is closed, so an edit would "
                "never reach the hub (reading still works); create a new client with "
                "rtkit.connect() to edit it"
            )

    # -- state ------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the hub and this copy exchanged what each lacked on the
        current connection (edits after that may still be on their way)."""
        return self._synced

    @property
    def pending(self) -> int:
        """Local updates not yet sent (they are merged before sending)."""
        return len(self._pending)

    def observe(self, callback: SharedCallback) -> SharedCallback:
        """Call ``callback(change)`` after each remote update, with the
        :class:`SharedChange`; runs like channel callbacks (one at a time, on
        the client's loop). Usable as a decorator; returns ``callback``."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        self._observers.append(callback)
        return callback

    def unobserve(self, callback: SharedCallback) -> None:
        """Undo :meth:`observe`."""
        if callback in self._observers:
            self._observers.remove(callback)

    async def flush(self) -> None:
        """Wait until every local edit so far is stored by the hub.

        Waits through reconnects (bound it with ``asyncio.timeout``); raises
        the hub's refusal (say :class:`~rtkit.errors.Forbidden` for a
        read-only token) if it refused an update.
        """
        while True:
            self._session.check_usable()
            if self._error is not None:
                raise _copy(self._error)
            if self._synced and not self._pending and not self._sending:
                return
            self._idle.clear()
            await self._idle.wait()

    async def close(self) -> None:
        """Stop syncing this document (the local copy stays readable)."""
        if self._closed:
            return
        self._closed = True
        self._synced = False
        self.doc.unobserve(self._doc_subscription)
        self.map.unobserve(self._map_subscription)
        self._docs.forget(self)
        self._idle.set()

    # -- internals, on the client's loop unless noted ----------------------

    def _on_transaction(self, event: Any) -> None:
        # Runs in the committing thread, inside the commit.
        if getattr(self._local, "remote", False) or self._closed:
            return
        update = event.update
        if threading.get_ident() == self._loop_thread:
            self._queue_local(update)
        elif not self._loop.is_closed():
            # (An edit of .doc after the client closed stays local: raising
            # here, inside pycrdt's commit, would not undo it.)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._queue_local, update)

    def _on_deep_change(self, events: Any) -> None:
        changed = self._changed
        if changed is None or not getattr(self._local, "remote", False):
            return
        try:
            for event in events:
                path = event.path
                if path:
                    changed.add(str(path[0]))
                else:
                    changed.update(str(key) for key in event.keys)
        except Exception:
            log.exception("rtkit: could not tell what a remote update of %r changed", self.name)

    def _queue_local(self, update: bytes) -> None:
        if self._closed:
            return
        self._pending.append(update)
        self._idle.clear()
        self._kick()

    def _kick(self) -> None:
        if self._synced and self._pending and not self._sending and self._session.connected:
            self._sending = True
            self._session.spawn(self._send_loop(), "doc-send", per_connection=True)

    async def _send_loop(self) -> None:
        attempt = 0
        try:
            while self._pending and self._synced and not self._closed:
                batch = self._take_batch()
                try:
                    await self._session.request(
                        DOC_UPDATE, {"doc": self.name, "update": batch}, wait=False
                    )
                except NotConnected:
                    return  # the next connection's sync sends it again
                except (RateLimited, Unavailable, AckTimeout) as exc:
                    # Passing trouble: send it again (applying an update
                    # twice is harmless) after a pause.
                    log.warning(
                        "rtkit: sending an update of %r failed (%s); retrying", self.name, exc
                    )
                    self._pending.insert(0, batch)
                    await asyncio.sleep(self._session.backoff.delay(attempt))
                    attempt += 1
                    continue
                except HubError as exc:
                    # Refused for good (read-only token, too large): keep the
                    # local edits, say so, and let flush() raise it.
                    log.error("rtkit: the hub refused an update of %r: %s", self.name, exc)
                    self._error = exc
                    return
                self.updates_sent += 1
                attempt = 0
        finally:
            self._sending = False
            self._maybe_idle()

    def _take_batch(self) -> bytes:
        size, count = 0, 0
        for update in self._pending:
            if count and size + len(update) > MAX_UPDATE_BATCH:
                break
            size += len(update)
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch[0] if len(batch) == 1 else pycrdt.merge_updates(*batch)

    def _maybe_idle(self) -> None:
        if (self._synced and not self._pending and not self._sending) or self._error:
            self._idle.set()

    def _apply_remote(self, update: bytes) -> None:
        self._local.remote = True
        self._changed = set()
        try:
            self.doc.apply_update(update)
        except BaseException as exc:
            if isinstance(exc, _NOT_PANICS):
                raise
            log.error("rtkit: could not apply an update of %r from the hub: %s", self.name, exc)
        finally:
            self._local.remote = False
            changed, self._changed = self._changed, None
        self.updates_received += 1
        if changed is not None and self._observers and not self._closed:
            change = SharedChange(self.name, frozenset(changed))
            for callback in self._observers:
                self._session.dispatch(callback, (change,))

    def _on_remote_update(self, payload: dict[str, Any]) -> None:
        update = payload.get("update")
        if isinstance(update, bytes | bytearray) and not self._closed:
            self._apply_remote(bytes(update))

    def _is_open(self) -> bool:
        """Still to be kept in sync (not closed)."""
        return not self._closed

    def _connection_lost(self) -> None:
        self._synced = False
        self._sync_token += 1

    async def _sync(self) -> None:
        """Run the sync steps on the current connection; raises the hub's refusal."""
        self._sync_token += 1
        token = self._sync_token
        state_vector = self.doc.get_state()
        await self._session.request(
            DOC_SYNC,
            {"doc": self.name, "state_vector": state_vector},
            on_ack=lambda ack: self._on_sync_ack(token, ack),
            wait=False,
        )

    def _on_sync_ack(self, token: int, ack: dict[str, Any]) -> None:
        """Step 1's answer; runs in the ack handler, before later doc.update events."""
        if token != self._sync_token or self._closed:
            return
        update, hub_state = ack.get("update"), ack.get("state_vector")
        if not isinstance(update, bytes | bytearray) or not isinstance(
            hub_state, bytes | bytearray
        ):
            raise RtkitError(f"doc.sync {self.name!r}: the hub's answer lacks update/state_vector")
        self._apply_remote(bytes(update))
        # Step 2: everything the hub lacks, offline edits and updates lost
        # with the last connection included. It also covers what is queued.
        missing = self.doc.get_update(bytes(hub_state))
        self._pending.clear()
        if missing != _EMPTY_UPDATE:
            self._pending.append(missing)
        self._synced = True
        self._error = None
        self._kick()
        self._maybe_idle()


def _copy(exc: HubError) -> HubError:
    return error_for_code(exc.code, exc.message)


@dataclass(frozen=True, slots=True)
class _Entry:
    doc: SharedDoc
    on_update: Callable[[dict[str, Any]], None]
    sync: Callable[[], Awaitable[None]]
    is_open: Callable[[], bool]
    connection_lost: Callable[[], None]
    wake: Callable[[], None]


class Docs:
    """The client's shared documents by name, fed by the hub's ``doc.update`` events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._entries: dict[str, _Entry] = {}
        session.on_event(DOC_UPDATE, self._on_doc_update)
        session.on_resume(self._resync_all)
        session.on_revoked("doc", self._revoked)
        session.on_disconnect(self._connection_lost)
        session.on_failure(self._wake_all)

    async def open(self, name: str) -> SharedDoc:
        """The document ``name``, synced if connected (see :meth:`rtkit.aio.Client.shared`)."""
        self.session.check_usable()
        validate_name(name, "doc", "shared")
        entry = self._entries.get(name)
        if entry is not None:
            return entry.doc
        doc = SharedDoc(self, name)  # registers itself
        entry = self._entries[name]
        if self.session.connected:
            try:
                await entry.sync()
            except ConnectionLost:
                pass  # syncs on reconnect
            except BaseException:
                self._entries.pop(name, None)
                await doc.close()
                raise
        return doc

    def register(
        self,
        doc: SharedDoc,
        *,
        on_update: Callable[[dict[str, Any]], None],
        sync: Callable[[], Awaitable[None]],
        is_open: Callable[[], bool],
        connection_lost: Callable[[], None],
        wake: Callable[[], None],
    ) -> None:
        """Route ``doc.name``'s updates to ``on_update``; run ``sync()`` after
        each reconnect while ``is_open()``, ``connection_lost()`` when a
        connection drops, and ``wake()`` when the client stops (so waiters
        see why)."""
        self._entries[doc.name] = _Entry(doc, on_update, sync, is_open, connection_lost, wake)

    def forget(self, doc: SharedDoc) -> None:
        """Stop routing updates to ``doc`` (it was closed)."""
        entry = self._entries.get(doc.name)
        if entry is not None and entry.doc is doc:
            del self._entries[doc.name]

    def _on_doc_update(self, payload: Any) -> None:
        entry = self._entries.get(str(payload.get("doc"))) if isinstance(payload, dict) else None
        if entry is not None:
            entry.on_update(payload)

    def _revoked(self, name: str) -> None:
        """The hub stopped syncing ``name`` with this connection (a refreshed
        token no longer grants it): the document stops syncing, as if closed."""
        entry = self._entries.get(name)
        if entry is not None:
            self.session.spawn(entry.doc.close(), "close-revoked")

    def _resync_all(self) -> None:
        for name, entry in self._entries.items():
            resume = self.session.resume(entry.sync, f"resync {name!r}", active=entry.is_open)
            self.session.spawn(resume, "resync", per_connection=True)

    def _connection_lost(self) -> None:
        for entry in self._entries.values():
            entry.connection_lost()

    def _wake_all(self, exc: RtkitError) -> None:
        for entry in self._entries.values():
            entry.wake()
