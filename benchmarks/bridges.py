"""Bridge throughput: MQTT and NATS into a channel with 10 subscribers.

    .venv/bin/python benchmarks/bridges.py             # 50,000 messages a case
    .venv/bin/python benchmarks/bridges.py --quick     # 10,000, a smoke test

Writes the ``bridges`` section of benchmarks/RESULTS.md.

Every part is its own process on loopback: an ``rtkit hub`` (memory store,
``--publish-rate 0``), the broker (mosquitto or nats-server, started here on
free ports), the bridge (``rtkit bridge ...``), a producer, and the 10
subscribers (``rtkit.aio`` clients on the one channel, in one process).
Cases:

1. **MQTT QoS 0**: a producer publishes N small JSON messages as fast as
   paho lets it while the bridge runs;
2. **NATS core**: the same with nats-py;
3. **JetStream**: N messages stored in a stream beforehand, then the bridge
   starts: its own rate, exactly once, with no producer running beside it.

Into the channel = messages stored / time from the producer's (or the first
message's) start to the hub's timestamp of the last one; to all = messages
that reached every subscriber / time to the last of them reaching the
slowest subscriber. Beside each, the broker's limit with the same
producer: a plain aiomqtt / nats-py consumer counting what it receives (no
hub), measured in the same run; and the CPU each part spent per message
(``/proc/<pid>/stat`` of the hub and the bridge, the subscribers' own
process time).

``--before REV`` runs each bridge case a second time with the bridge and
the subscribers importing the rtkit of git revision REV (``main``, a tag),
exported to a temporary directory, against the same hub and broker: before
and after in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_subscribers import Counter
from results import write_section
from scaling import cpu_seconds

import rtkit.aio
from rtkit._process import free_port, start_group, stop_group, wait_for_port
from rtkit.pytest_plugin import HubProcess

SUBSCRIBERS = int(os.environ.get("BENCH_SUBS", "10"))
ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
PYTHON_SUBS = f"{SUBSCRIBERS} rtkit.aio (Python)"
NODE_SUBS = f"{SUBSCRIBERS} socket.io-client (Node.js)"


def _producer(kind: str, port: int, count: int) -> None:
    """Run in a child process: publish ``count`` messages as fast as possible."""

    def mqtt() -> None:
        import paho.mqtt.client as paho  # aiomqtt's engine; sync here, so nothing waits
        from paho.mqtt.enums import CallbackAPIVersion

        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        for i in range(count):
            info = client.publish("bench/a/x", orjson.dumps({"i": i, "v": 1.5}), qos=0)
        info.wait_for_publish(60)
        client.disconnect()
        client.loop_stop()

    async def nats_core() -> None:
        import nats

        nc = await nats.connect(f"nats://127.0.0.1:{port}", pending_size=64 * 1024 * 1024)
        for i in range(count):
            await nc.publish("bench.a.x", orjson.dumps({"i": i, "v": 1.5}))
        await nc.flush()
        await nc.close()

    if kind == "mqtt":
        mqtt()
    else:
        asyncio.run(nats_core())


def start_producer(kind: str, port: int, count: int) -> subprocess.Popen[Any]:
    code = f"import bridges; bridges._producer({kind!r}, {port}, {count})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=BENCH_DIR)


def export_rtkit(rev: str) -> Path:
    """The ``rtkit`` package of git revision ``rev``, in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="rtkit-bench-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "rtkit"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


async def through_bridge(
    hub: HubProcess,
    channel: str,
    bridge_argv: list[str],
    run: Any,
    count: int,
    rtkit_path: str | None,
    who: str = PYTHON_SUBS,
) -> dict[str, Any]:
    """One bridge case: the subscribers' process, then the bridge, then ``run()``.

    Both child processes import the rtkit of ``rtkit_path`` when given (an
    export of another revision), else this tree's."""
    assert hub.proc is not None
    hub_pid = hub.proc.pid
    env = None if rtkit_path is None else {**os.environ, "PYTHONPATH": rtkit_path}
    if who == NODE_SUBS:
        node = shutil.which("node") or "node"
        argv = [node, "bridge_subscribers.js", hub.url, channel, str(count), str(SUBSCRIBERS)]
    else:
        code = f"import bridge_subscribers as s; s.run(*{(hub.url, channel, count, SUBSCRIBERS)!r})"
        argv = [sys.executable, "-c", code]
    subscribers = await asyncio.create_subprocess_exec(
        *argv, cwd=BENCH_DIR, env=env, stdout=subprocess.PIPE
    )
    assert subscribers.stdout is not None
    stdout = subscribers.stdout

    async def said(phase: str, within: float) -> dict[str, Any]:
        line = await asyncio.wait_for(stdout.readline(), within)
        if not line:
            raise RuntimeError(f"the subscribers' process ended before {phase!r}")
        fields: dict[str, Any] = orjson.loads(line)
        assert fields["phase"] == phase, fields
        return fields

    await said("ready", 60)
    rtkit_argv = [sys.executable, "-m", "rtkit", "--log-level", "WARNING", "bridge"]
    bridge = start_group([*rtkit_argv, *bridge_argv, "--url", hub.url, "--report", "0"], env=env)
    # CPU is counted from the first message on: the bridge's start (imports,
    # connecting: about a second of CPU) is not per-message work.
    start: dict[str, float] = {}

    async def first() -> None:
        fields = await said("first", count / 1000 + 120)
        start.update(at=fields["at"], hub=cpu_seconds(hub_pid), bridge=cpu_seconds(bridge.pid))

    first_seen = asyncio.ensure_future(first())
    try:
        t0, _ = await run()
        # One clock for all: the machine's wall clock (the hub's too).
        wall_t0 = None if t0 is None else time.time() - (time.perf_counter() - t0)
        await first_seen
        done = await said("done", count / 500 + 300)
        low, end = done["delivered"], done["last"]
        if wall_t0 is None:  # stored beforehand: the clock starts with the first message
            wall_t0 = start["at"]
            stored_from = done["first_ts"]
        else:
            stored_from = wall_t0
        # Into the channel: until the hub stored the last message, by its
        # own timestamp (the subscribers may still be catching up).
        client = await rtkit.aio.connect(hub.url)
        try:
            last = await client.channel(channel).history(limit=1)
        finally:
            await client.close()
        # CPU per message: the hub (ingest and fan-out to the subscribers),
        # the bridge, and the subscribers' process. The idle wait at the
        # end adds next to nothing to any of them.
        per_msg = 1e6 / max(low, 1)
        return {
            "delivered": low,
            "seconds": end - wall_t0,
            "rate": low / (end - wall_t0),
            "stored_rate": last[-1].seq / (last[-1].ts - stored_from) if last else None,
            "hub_us": (cpu_seconds(hub_pid) - start["hub"]) * per_msg,
            "bridge_us": (cpu_seconds(bridge.pid) - start["bridge"]) * per_msg,
            "subscribers_us": done["cpu"] * per_msg,
            # Seq jumps the Node.js subscribers saw (rtkit clients log them).
            "out_of_order": done.get("out_of_order", 0),
        }
    finally:
        first_seen.cancel()
        stop_group(bridge, timeout=5)
        if subscribers.returncode is None:
            subscribers.kill()
        await subscribers.wait()


async def plain_mqtt(port: int, count: int) -> dict[str, Any]:
    import aiomqtt

    counter = Counter()
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe("bench/#")
        t0 = time.perf_counter()
        producer = start_producer("mqtt", port, count)

        async def consume() -> None:
            async for _ in c.messages:
                counter("")
                if counter.count >= count:
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consume(), timeout=count / 2000 + 30)
        producer.wait(60)
    return {
        "delivered": counter.count,
        "seconds": counter.last - t0,
        "rate": counter.count / (counter.last - t0),
    }


async def plain_nats(port: int, count: int, subject: str = "bench.>") -> dict[str, Any]:
    import nats

    counter = Counter()
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    done = asyncio.Event()

    async def cb(msg: Any) -> None:
        counter("")
        if counter.count >= count:
            done.set()

    await nc.subscribe(subject, cb=cb, pending_msgs_limit=10_000_000)
    await nc.flush()
    t0 = time.perf_counter()
    producer = start_producer("nats", port, count)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=count / 2000 + 30)
    producer.wait(60)
    await nc.close()
    return {
        "delivered": counter.count,
        "seconds": counter.last - t0,
        "rate": counter.count / (counter.last - t0),
    }


# A case: its name, its bridged runs (who ran, what they measured), the plain consumer's.
Row = tuple[str, list[tuple[str, dict[str, Any]]], dict[str, Any]]


async def plain_jetstream(url: str, count: int) -> dict[str, Any]:
    """nats-py alone reading the stored stream with fetch(500), acking each batch."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(durable_name="plain", ack_policy=AckPolicy.ALL)
        await js.add_consumer("BENCH", config)
        psub = await js.pull_subscribe_bind(durable="plain", stream="BENCH")
        got = 0
        t0 = time.perf_counter()
        while got < count:
            msgs = await psub.fetch(500, timeout=5)
            got += len(msgs)
            await msgs[-1].ack()
        seconds = time.perf_counter() - t0
    finally:
        await nc.close()
    return {"delivered": got, "seconds": seconds, "rate": got / seconds}


async def main(count: int, before: str | None) -> list[Row]:
    rows: list[Row] = []

    async def runs(channel: str, argv: list[str], run: Any) -> list[tuple[str, dict[str, Any]]]:
        """The bridge of this tree with Python subscribers, then with
        socket.io-client ones, then the bridge and Python subscribers of
        ``before`` if given: each on a channel (and JetStream consumer) of
        its own."""
        out = [("this tree", PYTHON_SUBS, channel, argv, None)]
        out.append(
            ("this tree", NODE_SUBS, channel + ".node", argv_to(argv, channel, "node"), None)
        )
        if before is not None:
            old_argv = argv_to(argv, channel, "before")
            out.append(("before", PYTHON_SUBS, channel + ".before", old_argv, before))
        return [
            (f"{label}, {who}", await through_bridge(hub, name, a, run, count, path, who))
            for label, who, name, a, path in out
        ]

    def argv_to(argv: list[str], channel: str, suffix: str) -> list[str]:
        # Its own channel, and its own JetStream consumer (the whole stream again).
        return [
            a.replace(f"={channel}", f"={channel}.{suffix}") if a.startswith("bench") else a
            for a in argv
        ] + ["--durable", f"bench-{suffix}"] * ("--stream" in argv)

    # Retention above the run's size: a subscriber the hub drops for being
    # slow resumes from history instead of losing messages.
    hub = HubProcess(store="memory://?max_messages=1000000", extra_args=["--publish-rate", "0"])
    hub.start()
    tmp = Path(tempfile.mkdtemp(prefix="rtkit-bench-bridges-"))
    mq_port, nats_port = free_port(), free_port()
    mosq = start_group(
        ["mosquitto", "-p", str(mq_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    natsd = start_group(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(mq_port, mosq)
        wait_for_port(nats_port, natsd)
        nats_url = f"nats://127.0.0.1:{nats_port}"

        # 1. MQTT QoS 0
        async def mqtt_run() -> tuple[float, int]:
            await asyncio.sleep(1.5)  # the bridge connects and subscribes
            t0 = time.perf_counter()
            start_producer("mqtt", mq_port, count).wait(120)
            return t0, count

        plain = await plain_mqtt(mq_port, count)
        bridged = await runs(
            "bench.mqtt",
            ["mqtt", "--port", str(mq_port), "--map", "bench/+/x=bench.mqtt"],
            mqtt_run,
        )
        rows.append(("MQTT QoS 0 (producer running)", bridged, plain))

        # 2. NATS core
        async def nats_run() -> tuple[float, int]:
            await asyncio.sleep(1.5)
            t0 = time.perf_counter()
            start_producer("nats", nats_port, count).wait(120)
            return t0, count

        plain = await plain_nats(nats_port, count)
        bridged = await runs(
            "bench.nats",
            ["nats", "--server", nats_url, "--map", "bench.*.x=bench.nats"],
            nats_run,
        )
        rows.append(("NATS core (producer running)", bridged, plain))

        # 3. JetStream, stored beforehand
        import nats

        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.>"])
        stored = time.perf_counter()
        producer = start_producer("nats", nats_port, count)
        producer.wait(120)
        while (await js.stream_info("BENCH")).state.messages < count:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        store_rate = count / (time.perf_counter() - stored)
        await nc.close()

        plain = await plain_jetstream(nats_url, count)

        async def js_run() -> tuple[float | None, int]:
            return None, count  # from the first message: the bridge's start left out

        bridged = await runs(
            "bench.js",
            [
                "nats",
                "--server",
                nats_url,
                "--stream",
                "BENCH",
                "--durable",
                "bench",
                "--map",
                "bench.*.x=bench.js",
            ],
            js_run,
        )
        plain["filled"] = store_rate
        rows.append(("JetStream (stored beforehand)", bridged, plain))
    finally:
        stop_group(mosq, timeout=5)
        stop_group(natsd, timeout=5)
        hub.terminate()
        shutil.rmtree(tmp, ignore_errors=True)  # the JetStream store
    return rows


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _disorder(run: dict[str, Any]) -> str:
    return f" ({run['out_of_order']} out of order)" if run["out_of_order"] else ""


def report(count: int, rows: list[Row], before: str | None, load: float) -> str:
    lines = [
        f"## Bridges: MQTT and NATS into a channel with {SUBSCRIBERS} subscribers "
        "(benchmarks/bridges.py)",
        "",
        f'{count:,} messages a case (`{{"i": n, "v": 1.5}}`), every process on loopback '
        f"on this machine ({platform.machine()}, {os.cpu_count()} cores shared by all of "
        "them): hub (`--publish-rate 0`, memory store), "
        "broker, `rtkit bridge` process, producer process, and the "
        f"{SUBSCRIBERS} subscribers in one process of their own: rtkit.aio clients, or "
        "socket.io-client in Node.js as the widgets use it in a browser. Into the channel: "
        "messages / seconds from the start (the "
        "producer's, or for JetStream the first message's) to the hub's timestamp of the "
        "last one stored; to all: to the last one reaching the slowest subscriber. "
        "Beside it, in the same run, the broker's own "
        "limit: a plain aiomqtt / nats-py consumer of the same producer (no hub), for "
        "JetStream nats-py's `fetch(500)` reading the stored stream. CPU: microseconds of "
        "CPU per message of the hub process (ingest, storing, fan-out), the bridge "
        "process, and the subscribers' process. Load average when the run started "
        f"(the machine is shared): {load:.1f}.",
        "",
        "| case | bridge, subscribers | into the channel msg/s | to all subscribers msg/s "
        "| delivered to each "
        "| broker's own (plain consumer) msg/s | hub CPU µs/msg | bridge CPU µs/msg "
        "| subscribers CPU µs/msg |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs, plain in rows:
        for label, run in runs:
            lines.append(
                f"| {name} | {label} | {_rate(run['stored_rate'])} | {run['rate']:,.0f} | "
                f"{run['delivered']:,} / {count:,}{_disorder(run)} | {plain['rate']:,.0f} | "
                f"{run['hub_us']:.0f} | {run['bridge_us']:.0f} | {run['subscribers_us']:.0f} |"
            )
    filled = [plain["filled"] for _, _, plain in rows if "filled" in plain]
    if filled:
        lines += ["", f"The JetStream stream was filled at {filled[0]:,.0f} msg/s."]
    if before is not None:
        git = ["git", "-C", str(ROOT), "log", "-1", "--format=%h (%s)", before]
        commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
        lines += [
            "",
            f"Before: the bridge and the subscribers' process ran the rtkit of {commit}.",
        ]
    return "\n".join(lines) + "\n" + _NOTE


# What the numbers mean on the 2-core machine they were taken on.
_NOTE = """
Where the time goes, and the ceiling. The target is 50,000 msg/s into a
channel with 10 subscribers, or the broker's own limit measured beside it
(the plain consumer column):

- **JetStream** reaches it: with socket.io-client subscribers (what the
  widgets use in the browser) the bridge puts the stored stream into the
  channel faster than nats-py's own `fetch(500)` reads it; with the 10
  Python subscribers competing for the same two cores, close to it.
- **NATS core and MQTT** do not: there the producer runs at the same
  time, and the producer, the broker, the bridge, the hub and the 10
  subscribers share two cores. Add up the CPU columns (plus the producer,
  about a core for the second or two it runs) and the machine is full
  below the plain consumer's rate, which pays for the producer and one
  consumer only. For MQTT the bridge's cost is mostly paho parsing each
  message; aiomqtt alone (the plain consumer) pays the same.
- **The subscribers**: a Python subscriber now decodes a delivery in about
  3.5 µs, half what it took before (the "before" rows; `to all
  subscribers` doubles). The client decodes with orjson instead of the
  standard library, reads the hub's envelopes with one type test, and
  queues one callback entry per run of a channel's messages in a frame
  instead of one per message (callbacks are still called one message at a
  time, in order). At the small frames of a slow feed (MQTT here) the
  per-frame cost of python-engineio and python-socketio dominates.
- **The bridge** moves messages in batches end to end: each source hands
  over what it has ready, which goes to the hub as one publish request
  with one future (up to 500 messages, at most 4 requests awaiting acks),
  and positions are committed once per batch. What is left per message is
  mostly the broker client's own parsing, JSON decoding, and
  python-socketio looking through each request for binary data.
- **The hub** spends 10-20 µs per message on storing and the fan-out to 10
  (one encoded packet shared by all subscribers).

With a core for the hub and one for the bridge, those costs leave room for
some 50,000-70,000 msg/s from NATS (20,000-30,000 from MQTT, paho's
limit); this machine cannot show it. Every message reached every
subscriber in each case, in order. Rates here vary by a factor of two
from run to run with what else runs on the machine; the CPU per message
varies far less.
"""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 messages a case")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    parser.add_argument(
        "--before",
        metavar="REV",
        default=None,
        help="also run each bridge and the Python subscribers with the rtkit of git revision "
        "REV (e.g. main)",
    )
    args = parser.parse_args()
    n = args.messages or (10_000 if args.quick else 50_000)
    load = os.getloadavg()[0]
    before_path = None if args.before is None else export_rtkit(args.before)
    try:
        rows = asyncio.run(main(n, None if before_path is None else str(before_path)))
    finally:
        if before_path is not None:
            shutil.rmtree(before_path, ignore_errors=True)
    text = report(n, rows, args.before, load)
    print(text)
    if not args.no_write:
        write_section("bridges", text)
