"""Bridge throughput: MQTT and NATS into a channel with 10 subscribers.

    .venv/bin/python benchmarks/bridges.py             # 50,000 messages a case
    .venv/bin/python benchmarks/bridges.py --quick     # 10,000, a smoke test

Writes the ``bridges`` section of benchmarks/RESULTS.md.

Every part is its own process on loopback: an ``rtkit hub`` (memory store,
``--publish-rate 0``), the broker (mosquitto or nats-server, started here on
free ports), the bridge (``rtkit bridge ...``), a producer, and this script
with the 10 subscribers (``rtkit.aio`` clients on the one channel). Cases:

1. **MQTT QoS 0**: a producer publishes N small JSON messages as fast as
   paho lets it while the bridge runs;
2. **NATS core**: the same with nats-py;
3. **JetStream**: N messages stored in a stream beforehand, then the bridge
   starts: its own rate, exactly once, with no producer running beside it.

Rate = messages that reached every subscriber / time from the producer's
(or the bridge's) start to the last of them reaching the slowest
subscriber. Beside each, the broker's limit with the same producer: a plain
aiomqtt / nats-py consumer counting what it receives (no hub), measured in
the same run; and the CPU each part spent per message (``/proc/<pid>/stat``
of the hub and the bridge, the benchmark's own process time for the 10
subscribers).

``--before REV`` runs each bridge case a second time with the bridge
process importing the rtkit of git revision REV (``main``, a tag), exported
to a temporary directory, against the same hub and broker: before and after
in one run.
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
from results import write_section
from scaling import cpu_seconds

import rtkit.aio
from rtkit._process import free_port, start_group, stop_group, wait_for_port
from rtkit.pytest_plugin import HubProcess

SUBSCRIBERS = int(os.environ.get("BENCH_SUBS", "10"))
ROOT = Path(__file__).resolve().parent.parent
IDLE = 3.0  # seconds without a new message: what was lost stays lost


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
    return subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent)


def export_rtkit(rev: str) -> Path:
    """The ``rtkit`` package of git revision ``rev``, in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="rtkit-bench-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "rtkit"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


class Counter:
    def __init__(self, on_first: Any = None) -> None:
        self.count = 0
        self.last = 0.0
        self.first_ts = 0.0  # the hub's timestamp of the first message
        self.on_first = on_first

    def __call__(self, msg: Any) -> None:
        self.count += 1
        self.last = time.perf_counter()
        if self.count == 1:
            self.first_ts = getattr(msg, "ts", 0.0)  # plain consumers count no envelopes
            if self.on_first is not None:
                self.on_first()


async def wait_idle(counters: list[Counter], target: int) -> None:
    while True:
        low = min(c.count for c in counters)
        if low >= target:
            return
        before = [c.count for c in counters]
        await asyncio.sleep(IDLE)
        if [c.count for c in counters] == before:
            return


async def through_bridge(
    hub: HubProcess, channel: str, bridge_argv: list[str], run: Any, rtkit_path: str | None
) -> dict[str, Any]:
    assert hub.proc is not None
    hub_pid = hub.proc.pid
    # CPU is counted from the first message on: the bridge's start (imports,
    # connecting: about a second of CPU) is not per-message work.
    start: dict[str, float] = {}

    def first() -> None:
        start.update(
            at=time.perf_counter(),
            hub=cpu_seconds(hub_pid),
            bridge=cpu_seconds(bridge.pid),
            own=time.process_time(),
        )

    clients = [await rtkit.aio.connect(hub.url) for _ in range(SUBSCRIBERS)]
    counters = [Counter(first if i == 0 else None) for i in range(SUBSCRIBERS)]
    for client, counter in zip(clients, counters, strict=True):
        await client.channel(channel).subscribe(counter)
    argv = [sys.executable, "-m", "rtkit", "--log-level", "WARNING", "bridge", *bridge_argv]
    env = None
    if rtkit_path is not None:  # the bridge of another checkout
        env = {**os.environ, "PYTHONPATH": rtkit_path}
    bridge = start_group([*argv, "--url", hub.url, "--report", "0"], env=env)
    try:
        t0, target = await run()
        # The hub clock and ours are the same machine's.
        wall_t0 = None if t0 is None else time.time() - (time.perf_counter() - t0)
        await wait_idle(counters, target)
        low = min(c.count for c in counters)
        end = max(c.last for c in counters)
        if t0 is None:  # stored beforehand: the clock starts with the first message
            t0 = start["at"]
        # Into the channel: until the hub stored the last message, by its
        # own timestamp (polling history from this busy process would wait
        # behind the deliveries).
        last = await clients[0].channel(channel).history(limit=1)
        first_ts = counters[0].first_ts
        stored_seconds = last[-1].ts - (first_ts if wall_t0 is None else wall_t0)
        # CPU per message: the hub (ingest and fan-out to the subscribers),
        # the bridge, and this process's 10 subscribers. The idle wait
        # above adds next to nothing to any of them.
        per_msg = 1e6 / max(low, 1)
        return {
            "delivered": low,
            "seconds": end - t0,
            "rate": low / (end - t0),
            "stored_rate": last[-1].seq / stored_seconds if last else None,
            "hub_us": (cpu_seconds(hub_pid) - start["hub"]) * per_msg,
            "bridge_us": (cpu_seconds(bridge.pid) - start["bridge"]) * per_msg,
            "subscribers_us": (time.process_time() - start["own"]) * per_msg,
        }
    finally:
        stop_group(bridge, timeout=5)
        for client in clients:
            await client.close()


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


Row = tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]


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

    async def both(channel: str, argv: list[str], run: Any) -> tuple[Any, Any]:
        """The bridge of this tree, and the one of ``before`` if given."""
        bridged = await through_bridge(hub, channel, argv, run, None)
        old = None
        if before is not None:
            argv = argv_to(argv, channel)
            old = await through_bridge(hub, channel + ".before", argv, run, before)
        return bridged, old

    def argv_to(argv: list[str], channel: str) -> list[str]:
        # Its own channel, and its own JetStream consumer (the whole stream again).
        return [
            a.replace(f"={channel}", f"={channel}.before") if a.startswith("bench") else a
            for a in argv
        ] + ["--durable", "bench-before"] * ("--stream" in argv)

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
        bridged, old = await both(
            "bench.mqtt",
            ["mqtt", "--port", str(mq_port), "--map", "bench/+/x=bench.mqtt"],
            mqtt_run,
        )
        rows.append(("MQTT QoS 0 (producer running)", bridged, old, plain))

        # 2. NATS core
        async def nats_run() -> tuple[float, int]:
            await asyncio.sleep(1.5)
            t0 = time.perf_counter()
            start_producer("nats", nats_port, count).wait(120)
            return t0, count

        plain = await plain_nats(nats_port, count)
        bridged, old = await both(
            "bench.nats",
            ["nats", "--server", nats_url, "--map", "bench.*.x=bench.nats"],
            nats_run,
        )
        rows.append(("NATS core (producer running)", bridged, old, plain))

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

        bridged, old = await both(
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
        rows.append(("JetStream (stored beforehand)", bridged, old, plain))
    finally:
        stop_group(mosq, timeout=5)
        stop_group(natsd, timeout=5)
        hub.terminate()
        shutil.rmtree(tmp, ignore_errors=True)  # the JetStream store
    return rows


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def report(count: int, rows: list[Row], before: str | None, load: float) -> str:
    lines = [
        f"## Bridges: MQTT and NATS into a channel with {SUBSCRIBERS} subscribers "
        "(benchmarks/bridges.py)",
        "",
        f'{count:,} messages a case (`{{"i": n, "v": 1.5}}`), every process on loopback '
        f"on this machine ({platform.machine()}, {os.cpu_count()} cores shared by all of "
        "them): hub (`--publish-rate 0`, memory store), "
        "broker, `rtkit bridge` process, producer process, and the "
        f"{SUBSCRIBERS} subscribers in the benchmark's process. Into the channel: "
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
        "| case | bridge | into the channel msg/s | to all subscribers msg/s | delivered to each "
        "| broker's own (plain consumer) msg/s | hub CPU µs/msg | bridge CPU µs/msg "
        "| subscribers CPU µs/msg |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, bridged, old, plain in rows:
        runs = [("this tree", bridged)] + ([("before", old)] if old is not None else [])
        for label, run in runs:
            lines.append(
                f"| {name} | {label} | {_rate(run['stored_rate'])} | {run['rate']:,.0f} | "
                f"{run['delivered']:,} / {count:,} | {plain['rate']:,.0f} | "
                f"{run['hub_us']:.0f} | {run['bridge_us']:.0f} | {run['subscribers_us']:.0f} |"
            )
    filled = [plain["filled"] for _, _, _, plain in rows if "filled" in plain]
    if filled:
        lines += ["", f"The JetStream stream was filled at {filled[0]:,.0f} msg/s."]
    if before is not None:
        git = ["git", "-C", str(ROOT), "log", "-1", "--format=%h (%s)", before]
        commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
        lines += ["", f"Before: the bridge process ran the rtkit of {commit}."]
    return "\n".join(lines) + "\n" + _NOTE


# What the numbers mean on the 2-core machine they were taken on.
_NOTE = """
Where the time goes, and the ceiling. The target, 50,000 msg/s into a
channel with 10 subscribers, is out of reach on this 2-core machine, and
the bridge is no longer what stops it:

- **The bridge** moves messages in batches end to end: each source hands
  over what it has ready, which goes to the hub as one publish request
  with one future (up to 500 messages, at most 4 requests awaiting acks, so
  under load batches grow instead of requests multiplying), and positions
  are committed once per batch. For JetStream it pulls by itself instead of
  through nats-py's `fetch`, which waited for each message with a task and a
  timeout. cProfile of the bridge before: per message, nats-py's `fetch`,
  the client's future, lock and callbacks for each publish, the topic map's
  regular expression, and one or more turns of the event loop. What is left
  per message is mostly the broker client's own parsing (paho is most of
  the MQTT bridge's cost), JSON decoding, and python-socketio looking
  through each request for binary data. Compare the "bridge CPU" column of
  the two rows of each case.
- **Into the channel** the bridge now carries 1.3 to 3.5 times what it
  did. With the 10 subscribers taking their share of the two cores it stays
  below the plain consumer (the broker's own limit for a Python client:
  what nats-py or aiomqtt alone read from the same producer); with one
  subscriber it comes within 10-25 % of it (see below). MQTT and NATS core
  are also held to the rate of the Python producer beside them.
- **To all 10 subscribers** is held by the subscribers: the 10 `rtkit.aio`
  clients share this benchmark's one Python process, and each delivery
  costs about 7 µs there (python-socketio decoding JSON with the standard
  library, envelope checks, the callback), about 70 µs for the 10, so that
  process tops out near 14,000 msg/s on a whole core, and gets far less
  while the hub, the broker, the producer and the bridge share the two
  cores with it and with other users.
- **The hub** spends 10-30 µs per message on storing and the fan-out to 10
  (one encoded packet shared by all subscribers), the less the larger the
  batches.

So the ceiling here is two shared cores for everything, most of it Python
clients decoding: the 10 subscribers, and paho for MQTT. With subscribers
elsewhere (browsers, other hosts), the hub's 10-30 µs and the NATS bridges'
10-20 µs per message leave room for some 35,000-70,000 msg/s on a core
each, the MQTT bridge's 30-45 µs (mostly paho) for 20,000-30,000; this
machine cannot show it. Every message reached every subscriber in each case (no
loss). Rates here vary by a factor of two from run to run with what else
runs on the machine; the CPU per message varies far less.

`BENCH_SUBS=1` shows the bridge without the 10 subscribers' cost: into the
channel it then comes within 10-25 % of the plain consumer (one run at load
5: MQTT 7,300 against 8,300, NATS core 9,700 against 13,100, JetStream
15,600 against 16,700 msg/s).
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
        help="also run each bridge with the rtkit of git revision REV (e.g. main)",
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
