"""Record channels to files and replay them, against real hubs."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

import rtkit
import rtkit.aio
import rtkit.record
from rtkit._process import OutputLines
from rtkit.pytest_plugin import HubProcess, InProcessHub

from .helpers import poll_until, wait_until

FORMATS = ["jsonl", "parquet"]


@pytest.fixture(scope="module")
def hub() -> Iterator[InProcessHub]:
    # No publish rate cap: replays at full speed are what some tests measure.
    hub = InProcessHub(extra_args=["--publish-rate", "0"]).start()
    try:
        yield hub
    finally:
        hub.terminate(timeout=5)


def _payloads() -> list[Any]:
    return [{"i": i, "px": 100.0 + i / 8} for i in range(40)] + [
        b"\x00\x01raw",
        "text",
        [1, 2, None],
        None,
    ]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sensor": pd.array([1, 2, 3, 4], dtype="int64"),
            "temp": [20.5, None, 21.0, 19.75],
            "at": pd.date_range("2026-01-01", periods=4, freq="s", tz="UTC"),
        }
    )


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_replay_looks_like_the_live_stream(
    hub: InProcessHub, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"live.{fmt}"
    live: list[rtkit.Message] = []
    replayed: list[rtkit.Message] = []
    async with await rtkit.aio.connect(hub.url) as client:
        source, target = client.channel(f"rec.live.{fmt}"), client.channel(f"rec.copy.{fmt}")
        await source.subscribe(live.append)
        recorder = await source.record(path, chunk_rows=7)
        for data in _payloads():
            await source.publish(data, wait=False)
        await source.publish_frame(_frame(), batch_rows=2)
        total = len(_payloads()) + 2
        await wait_until(lambda: len(live) == total, "the live messages")
        await recorder.close()
        assert recorder.rows == total

        await target.subscribe(replayed.append)
        view = await target.frame(window=1_000)  # what a widget's pandas view shows
        stats = await rtkit.aio.replay(path, target, speed=0)
        assert stats.rows == total and stats.loops == 1
        await wait_until(lambda: len(replayed) == total, "the replayed messages")
        # What subscribers see: the same data in the same order; frame
        # batches stay batches, so pandas views get the same rows.
        assert [m.data for m in replayed] == [m.data for m in live]
        live_df = await source.history(as_frame=True)
        copy_df = await target.history(as_frame=True)
        pd.testing.assert_frame_equal(
            copy_df.reset_index(drop=True), live_df.reset_index(drop=True)
        )
        pd.testing.assert_frame_equal(
            view.df.reset_index(drop=True), live_df.reset_index(drop=True)
        )
        await view.close()
    recorded = rtkit.record.load(path)
    assert isinstance(recorded, list)
    assert [(m.channel, m.seq, m.id, m.data) for m in recorded] == [
        (m.channel, m.seq, m.id, m.data) for m in live
    ]
    frame = rtkit.record.load(path, as_frame=True)
    assert len(frame) == len(live_df)


def _timed_file(path: Path, count: int, step: float) -> None:
    """A recording whose rows are ``step`` hub-seconds apart."""
    with path.open("wb") as file:
        for i in range(count):
            row = {"channel": "t", "seq": i + 1, "ts": 1e9 + i * step, "id": f"m{i}", "data": i}
            file.write(orjson.dumps(row) + b"\n")


async def test_speed_scales_the_recorded_gaps(hub: InProcessHub, tmp_path: Path) -> None:
    path = tmp_path / "second.jsonl"
    _timed_file(path, 21, 0.05)  # one recorded second
    async with await rtkit.aio.connect(hub.url) as client:
        target = client.channel("rec.speed")
        got: list[rtkit.Message] = []
        await target.subscribe(got.append)
        stats = await rtkit.aio.replay(path, target, speed=10)
        await wait_until(lambda: len(got) == 21, "the replay")
    # Measured on the hub's timestamps of the replayed messages: ~0.1 s.
    span = got[-1].ts - got[0].ts
    assert 0.08 <= span <= 0.3, span
    assert 0.08 <= stats.seconds <= 0.5, stats
    assert [m.data for m in got] == list(range(21))
    # Each gap scaled too, not only the whole: no gap longer than ~4 recorded ones.
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(got)]
    assert max(gaps) < 0.05, gaps


async def test_loop_repeats_with_distinct_ids(hub: InProcessHub, tmp_path: Path) -> None:
    path = tmp_path / "three.jsonl"
    _timed_file(path, 3, 0.01)
    async with await rtkit.aio.connect(hub.url) as client:
        target = client.channel("rec.loop")
        stats = await rtkit.aio.replay(path, target, speed=0, loop=3)
        history = await target.history()
    assert stats.loops == 3 and stats.rows == 9
    assert [m.data for m in history] == [0, 1, 2] * 3
    assert len({m.id for m in history}) == 9


async def test_a_loop_forever_keeps_its_pace_until_cancelled(
    hub: InProcessHub, tmp_path: Path
) -> None:
    import asyncio

    path = tmp_path / "pair.jsonl"
    _timed_file(path, 2, 0.2)  # 0.2 s recorded; a loop adds one average gap: 0.4 s a pass
    async with await rtkit.aio.connect(hub.url) as client:
        target = client.channel("rec.forever")
        got: list[rtkit.Message] = []
        await target.subscribe(got.append)
        task = asyncio.ensure_future(rtkit.aio.replay(path, target, speed=4, loop=True))
        await wait_until(lambda: len(got) >= 6, "three passes")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Three passes of 0.1 s each at speed 4, the rows 0.05 s apart.
    assert [m.data for m in got[:6]] == [0, 1] * 3
    assert 0.2 <= got[5].ts - got[0].ts <= 0.6


async def test_a_restarted_replay_does_not_double(hub: InProcessHub, tmp_path: Path) -> None:
    path = tmp_path / "once.jsonl"
    _timed_file(path, 5, 0.01)
    async with await rtkit.aio.connect(hub.url) as client:
        target = client.channel("rec.restart")
        await rtkit.aio.replay(path, target, speed=0)
        # The same replay again (a restart after a crash): the hub drops the repeats.
        await rtkit.aio.replay(path, target, speed=0)
        assert [m.data for m in await target.history()] == [0, 1, 2, 3, 4]
        # On purpose, as a new run: played again.
        await rtkit.aio.replay(path, target, speed=0, run="again")
        assert [m.data for m in await target.history()] == [0, 1, 2, 3, 4] * 2


async def test_a_file_holding_a_seq_twice_replays_both(hub: InProcessHub, tmp_path: Path) -> None:
    # Recorded across a restart of a memory hub: the channel's seqs start over.
    path = tmp_path / "epochs.jsonl"
    rows = [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    path.write_bytes(
        b"".join(
            orjson.dumps({"channel": "e", "seq": seq, "ts": 1e9 + i, "data": f"{tag}{seq}"}) + b"\n"
            for i, (tag, seq) in enumerate(rows)
        )
    )
    async with await rtkit.aio.connect(hub.url) as client:
        target = client.channel("rec.epochs")
        await rtkit.aio.replay(path, target, speed=0)
        assert [m.data for m in await target.history()] == ["a1", "a2", "b1", "b2"]


def test_a_parquet_file_of_something_else_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(rtkit.RecordingError, match="not an rtkit recording"):
        list(rtkit.record.iter_messages(path))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_recording_resumes_without_gaps_or_duplicates(
    hub: InProcessHub, tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / f"resume.{fmt}"
    async with await rtkit.aio.connect(hub.url) as client:
        ch = client.channel(f"rec.resume.{fmt}")
        recorder = await ch.record(path, since=0)
        for i in range(10):
            await ch.publish(i)
        await wait_until(lambda: recorder.received == 10, "10 rows")
        await recorder.close()
        for i in range(10, 25):  # published while nothing records
            await ch.publish(i)
        recorder = await ch.record(path)
        assert recorder.resumed == {ch.name: 10}
        for i in range(25, 30):
            await ch.publish(i)
        await wait_until(lambda: recorder.received == 20, "the rest")
        await recorder.close()
    messages = list(rtkit.record.iter_messages(path, chunk_rows=4))
    assert [m.seq for m in messages] == list(range(1, 31))
    assert [m.data for m in messages] == list(range(30))
    assert not (tmp_path / f"resume.{fmt}.partial").exists()


def test_blocking_record_and_replay(hub: InProcessHub, tmp_path: Path) -> None:
    path = tmp_path / "sync.parquet"
    with rtkit.connect(hub.url) as client:
        ch = client.channel("rec.sync")
        with ch.record(path, chunk_rows=2) as recorder:
            for i in range(5):
                ch.publish({"i": i})
            poll_until(lambda: recorder.aio.received == 5, "5 rows")
        assert recorder.rows == 5
        stats = rtkit.replay(path, client.channel("rec.sync.copy"), speed=0)
        assert stats.rows == 5
        copy = client.channel("rec.sync.copy").history()
    assert [m.data for m in copy] == [{"i": i} for i in range(5)]


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("missing.jsonl", None, "no such recording"),
        ("notjson.jsonl", b'{"channel": "a", "seq": 1, "ts": 1, "data": 1}\nhello\n', "line 2"),
        ("noseq.jsonl", b'{"channel": "a", "ts": 1, "data": 1}\n', "'seq' must be an integer"),
        ("garbage.parquet", b"not parquet at all", "not a readable Parquet file"),
        ("rec.csv", b"a,b\n", "cannot tell the format"),
    ],
)
async def test_bad_files_give_a_clear_error(
    hub: InProcessHub, tmp_path: Path, name: str, content: bytes | None, error: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    async with await rtkit.aio.connect(hub.url) as client:
        target = client.channel("rec.bad")
        with pytest.raises(rtkit.RtkitError) as info:
            await rtkit.aio.replay(path, target)
        assert await target.history() == []  # nothing published before the error
    message = str(info.value)
    assert error in message and "\n" not in message and name in message


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    _timed_file(path, 3, 0.1)
    with path.open("ab") as file:
        file.write(b'{"channel": "t", "seq": 4, "ts"')
    assert [m.seq for m in rtkit.record.iter_messages(path)] == [1, 2, 3]


# -- the command line, through a real `rtkit hub` ------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtkit", "--log-level", "WARNING", *args]


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def _start_recorder(hub: HubProcess, path: Path, *channels: str) -> OutputLines:
    proc = subprocess.Popen(
        _cli("record", *channels, "-o", str(path), "--url", hub.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = OutputLines(proc)
    output.wait_for("recording ", within=20)  # subscribed from here on
    return output


@pytest.mark.slow
def test_cli_record_survives_kill_and_replays(rt_hub: HubProcess, tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    with rtkit.connect(rt_hub.url) as client:
        feed = client.channel("cli.feed")
        output = _start_recorder(rt_hub, path, "cli.feed", "--chunk-rows", "50")
        for i in range(300):
            feed.publish({"i": i}, wait=False)
        client.flush()
        output.wait_for(lambda line: line.endswith("in " + str(path)), within=20)
        written = max(int(line.split()[0]) for line in output.lines if " row(s) in " in line)
        output.proc.kill()  # kill -9 mid-stream
        output.proc.wait(10)
        # What survives is readable, gap-free from the first seq, and holds
        # at least every row the recorder had reported written.
        seqs = [row["seq"] for row in _lines(path)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= written > 0
        for i in range(300, 400):  # published while no recorder runs
            feed.publish({"i": i}, wait=False)
        client.flush()

        output = _start_recorder(rt_hub, path, "cli.feed")
        poll_until(lambda: len(_lines(path)) == 400, "the resumed recording")
        output.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert output.proc.wait(10) == 0, output.lines
        assert [row["data"] for row in _lines(path)] == [{"i": i} for i in range(400)]

        out = subprocess.run(
            _cli("replay", str(path), "--to", "cli.copy", "--speed", "max", "--url", rt_hub.url),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert "replayed 400 message(s) to cli.copy" in out.stderr
        assert [m.data for m in client.channel("cli.copy").history()] == [
            {"i": i} for i in range(400)
        ]


@pytest.mark.slow
def test_cli_parquet_recording_is_complete_after_ctrl_c(rt_hub: HubProcess, tmp_path: Path) -> None:
    path = tmp_path / "feed.parquet"
    partial = path.with_name(path.name + ".partial")
    with rtkit.connect(rt_hub.url) as client:
        output = _start_recorder(rt_hub, path, "cli.pq.a", "cli.pq.b")
        for i in range(50):
            client.channel("cli.pq.a" if i % 2 else "cli.pq.b").publish(i)
        output.wait_for("50 row(s) in", within=20)
        # Until it stops, the rows are in FILE.partial, which has no footer yet.
        assert partial.exists() and not path.exists()
        output.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert output.proc.wait(10) == 0, output.lines
    output.wait_for("recorded 50 row(s)", within=5)
    rows = list(rtkit.record.iter_messages(path))
    assert sorted(m.data for m in rows) == list(range(50))
    assert {m.channel for m in rows} == {"cli.pq.a", "cli.pq.b"}
    assert not partial.exists()


def test_cli_replay_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    out = subprocess.run(
        _cli("replay", str(bad), "--to", "x", "--url", "http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "RTKIT_TOKEN": ""},
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "bad.jsonl: line 1: not JSON" in out.stderr
