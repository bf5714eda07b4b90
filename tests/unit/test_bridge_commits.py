"""The bridge commits a source position only after the hub stored the
message and every one before it (a scripted hub client, no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from rtkit.bridges import Bridge, TopicMap
from rtkit.bridges._core import BridgeState, Position, SourceMessage
from rtkit.client._backoff import Backoff
from rtkit.errors import RateLimited

WAIT = 5.0


class _Source:
    """Six positioned messages in batches of three; starts again after the
    last position committed, as a broker with acks does."""

    kind = "scripted"
    topics = TopicMap([("t", "t")], flavor="plain")

    def __init__(self, stored: set[int]) -> None:
        self.stored = stored
        self.committed = 0
        self.bad_commits: list[int] = []
        self.all_committed = asyncio.Event()

    def _commit(self, position: int) -> Callable[[], None]:
        def commit() -> None:
            if not set(range(1, position + 1)) <= self.stored:
                self.bad_commits.append(position)  # committed before the hub had it
            self.committed = max(self.committed, position)
            if self.committed == 6:
                self.all_committed.set()

        return commit

    async def batches(self, state: BridgeState, size: int) -> AsyncIterator[list[SourceMessage]]:
        state.connected = True
        start = self.committed + 1
        for first in range(start, 7, 3):
            batch = [
                SourceMessage("t", n, Position("s", str(n)))
                for n in range(first, min(first + 3, 7))
            ]
            batch[-1].commit = self._commit(batch[-1].data)  # the last commits the batch
            yield batch
        await asyncio.Event().wait()

    async def messages(self, state: BridgeState) -> AsyncIterator[SourceMessage]:
        raise NotImplementedError  # batches() is what the bridge reads
        yield

    async def checkpoint(self) -> str | None:
        return str(self.committed) if self.committed else None


class _Publisher:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # what the client's queue holds: a batch is split to fit
        self.sent: list[tuple[list[int], asyncio.Future[list[Any]]]] = []
        self.changed = asyncio.Event()

    async def publish_many(self, prepared: list[Any]) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.sent.append(([p.data for p in prepared], future))
        self.changed.set()
        return future

    async def until_sent(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.sent) < count:
                self.changed.clear()
                await self.changed.wait()


class _Client:
    connected = True

    def __init__(self, capacity: int = 1000) -> None:
        self.publisher = _Publisher(capacity)

    def on(self, event: str, handler: Any) -> None:
        pass

    async def wait_connected(self) -> None:
        pass

    async def flush(self) -> None:
        pass


class _Run:
    """A bridge on a :class:`_Source` and a scripted client, while it runs."""

    def __init__(self, capacity: int = 1000) -> None:
        self.stored: set[int] = set()
        self.source = _Source(self.stored)
        self.client = _Client(capacity)
        self.publisher = self.client.publisher
        self.bridge = Bridge(
            self.source,
            client=self.client,
            batch=3,
            report_channel=None,
            backoff=Backoff(0.01, 0.02),
        )

    def ack(self, index: int, refuse: bool = False) -> None:
        data, future = self.publisher.sent[index]
        if refuse:
            future.set_result([RateLimited("over the limit")] * len(data))
        else:
            self.stored.update(data)
            future.set_result(data)

    async def read_again(self, sent: int) -> list[list[int]]:
        """What the bridge sent after reading the source again, up to ``sent`` in all."""
        before = len(self.publisher.sent)
        try:
            await self.publisher.until_sent(sent)
        except TimeoutError:
            bad = self.source.bad_commits
            raise AssertionError(f"not read again; committed before stored: {bad}") from None
        return [data for data, _ in self.publisher.sent[before:]]

    async def __aenter__(self) -> _Run:
        self.task = asyncio.create_task(self.bridge.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.bridge.stop()
        await asyncio.wait_for(self.task, WAIT)


async def test_a_batch_refused_in_the_same_turn_as_an_ack_before_it_is_not_committed() -> None:
    # The acks of two batches in flight come in together: the first stored,
    # the second refused for now. Both futures are done before either's
    # callback runs; the second must not be committed as if stored when the
    # first one's callback commits what is settled.
    async with _Run() as run:
        await run.publisher.until_sent(2)
        assert [data for data, _ in run.publisher.sent] == [[1, 2, 3], [4, 5, 6]]
        run.ack(0)
        run.ack(1, refuse=True)
        assert await run.read_again(3) == [[4, 5, 6]]
        run.ack(2)
        async with asyncio.timeout(WAIT):
            await run.source.all_committed.wait()
    assert run.source.bad_commits == []


async def test_a_refused_part_of_a_split_batch_holds_back_the_commit_of_the_rest() -> None:
    # A source batch larger than the client's queue goes out in parts; only
    # the last part carries the batch's commit. A refused earlier part must
    # hold it back, though it carries no commit of its own.
    async with _Run(capacity=2) as run:
        await run.publisher.until_sent(4)
        assert [data for data, _ in run.publisher.sent] == [[1, 2], [3], [4, 5], [6]]
        for index in range(4):
            run.ack(index, refuse=index == 2)
            await asyncio.sleep(0)  # each ack in a turn of its own
        assert await run.read_again(6) == [[4, 5], [6]]
        run.ack(4)
        run.ack(5)
        async with asyncio.timeout(WAIT):
            await run.source.all_committed.wait()
    assert run.source.bad_commits == []
