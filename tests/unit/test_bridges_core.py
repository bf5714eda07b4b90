"""Topic maps, transforms and payloads of rtkit.bridges (no broker needed)."""

from __future__ import annotations

import pytest

from rtkit.bridges import TopicMap, decode_payload, load_transform
from rtkit.errors import ConfigurationError


def test_mqtt_wildcards_fill_the_template() -> None:
    topics = TopicMap(
        [("sensors/+/temp", "sensors.{1}.temp"), ("plant/+/#", "plant.{1}.{2}")], flavor="mqtt"
    )
    assert topics.channel("sensors/kitchen/temp") == "sensors.kitchen.temp"
    assert topics.channel("plant/a/b/c") == "plant.a.b.c"
    assert topics.channel("sensors/kitchen/humidity") is None
    assert topics.channel("sensors/a/b/temp") is None  # + is one level
    assert topics.patterns == ["sensors/+/temp", "plant/+/#"]


def test_nats_wildcards_and_the_whole_topic() -> None:
    topics = TopicMap([("orders.*.created", "new-{1}"), ("audit.>", "{topic}")], flavor="nats")
    assert topics.channel("orders.eu.created") == "new-eu"
    assert topics.channel("audit.a.b") == "audit.a.b"
    assert topics.channel("orders.eu.deleted") is None


def test_amqp_wildcards_follow_routing_key_rules() -> None:
    topics = TopicMap(
        [("sensors.*.temp", "temp.{1}"), ("audit.#.done", "done.{1}"), ("log.#", "{topic}")],
        flavor="amqp",
    )
    assert topics.channel("sensors.kitchen.temp") == "temp.kitchen"
    assert topics.channel("sensors.a.b.temp") is None  # * is one word
    assert topics.channel("audit.eu.orders.done") == "done.eu.orders"
    assert topics.channel("audit.done") == "done."  # # also matches no word
    assert topics.channel("log") == "log"
    assert topics.channel("log.app.error") == "log.app.error"
    assert topics.channel("logs.app") is None
    leading = TopicMap([("#.error", "errors.{1}")], flavor="amqp")
    assert leading.channel("app.db.error") == "errors.app.db"
    assert leading.channel("app.db.errors") is None


def test_short_keys_fit_publish_ids() -> None:
    from rtkit.bridges._core import short_key

    assert short_key("READINGS", 56) == "READINGS"
    long = short_key("x" * 300, 56)
    assert long.startswith("sha256-") and len(long) == 47
    assert long == short_key("x" * 300, 56) != short_key("x" * 299, 56)


def test_first_matching_rule_wins() -> None:
    topics = TopicMap.parse(["a/special=special", "a/+=other.{1}", "#"], flavor="mqtt")
    assert topics.channel("a/special") == "special"
    assert topics.channel("a/x") == "other.x"
    assert topics.channel("b/c") == "b.c"


@pytest.mark.parametrize(
    ("pattern", "template", "message"),
    [
        ("a/#/b", "x", "last level"),
        ("a/b+", "x", "whole level"),
        ("a/+", "x.{2}", "1 wildcard"),
        ("a/+", "x.{name}", "1 wildcard"),
    ],
)
def test_bad_rules_are_refused(pattern: str, template: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TopicMap([(pattern, template)], flavor="mqtt")


def test_a_topic_that_makes_a_bad_channel_name_raises() -> None:
    topics = TopicMap([("+", "x {1}")], flavor="mqtt")
    with pytest.raises(ValueError, match="not a valid channel name"):
        topics.channel("a")


def test_payloads_decode_as_json_then_text_then_bytes() -> None:
    assert decode_payload(b'{"t": 21.5}') == {"t": 21.5}
    assert decode_payload(b"on") == "on"
    assert decode_payload(b"\xff\x00") == b"\xff\x00"
    assert decode_payload(b"12", "text") == "12"
    with pytest.raises(ValueError, match="not JSON"):
        decode_payload(b"on", "json")


def test_transforms_load_by_name() -> None:
    assert load_transform("json:dumps") is __import__("json").dumps
    with pytest.raises(ConfigurationError, match="module:function"):
        load_transform("json.dumps")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_transform("no_such_module_xyz:f")
    with pytest.raises(ConfigurationError, match="not a callable"):
        load_transform("json:nothing_here")


def test_the_bridges_package_exports_its_names() -> None:
    import rtkit.bridges

    assert set(rtkit.bridges.__all__) == {
        "Bridge", "BridgeState", "Position", "Source", "SourceMessage", "TopicMap",
        "Transform", "decode_payload", "load_transform",
    }  # fmt: skip


def test_the_command_line_refuses_a_bad_map_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    from rtkit.cli import main

    assert main(["bridge", "mqtt", "--map", "a/+=x.{2}", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "rtkit bridge" in err and "1 wildcard" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--batch", "501"], "batch is 1 to 500"), (["--window", "0"], "window is at least 1")],
)
def test_the_command_line_refuses_a_bad_batch_or_window_clearly(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rtkit.cli import main

    argv = ["bridge", "mqtt", "--map", "a/+", "--url", "http://127.0.0.1:9", *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# -- where the MQTT broker is ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("", ("127.0.0.1", 1883)),
        ("broker.lan:8883", ("broker.lan", 8883)),
        ("broker.lan", ("broker.lan", 1883)),
        (" 10.0.0.5:1884 ", ("10.0.0.5", 1884)),
        ("[::1]:1885", ("::1", 1885)),
        ("[::1]", ("::1", 1883)),
    ],
)
def test_broker_address_reads_host_and_port(value: str, address: tuple[str, int]) -> None:
    from rtkit.bridges.mqtt import broker_address

    assert broker_address(value) == address


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("broker:http", "not 1-65535"),
        ("broker:70000", "not 1-65535"),
        (":1883", "names no host"),
        ("::1:1883", "in brackets"),
        ("[::1", "[IPv6 address]:port"),
    ],
)
def test_a_bad_broker_address_says_what_is_wrong(value: str, message: str) -> None:
    from rtkit.bridges.mqtt import broker_address

    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        broker_address(value)


def test_rtkit_mqtt_names_the_broker_of_sources_and_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rtkit.bridges._cli import source_from_args
    from rtkit.bridges.mqtt import MqttSource, broker_address
    from rtkit.cli import build_parser

    topics = TopicMap([("sensors/+/temp", "sensors.{1}")])
    monkeypatch.delenv("RTKIT_MQTT", raising=False)
    assert broker_address() == ("127.0.0.1", 1883)
    monkeypatch.setenv("RTKIT_MQTT", "mqtt.example:2883")
    assert broker_address() == ("mqtt.example", 2883)
    source = MqttSource(topics=topics)
    assert (source.host, source.port) == ("mqtt.example", 2883)
    # An explicit host or port wins over the environment.
    assert MqttSource(port=1999, topics=topics).port == 1999
    explicit = MqttSource("other", topics=topics)
    assert (explicit.host, explicit.port) == ("other", 1883)
    args = build_parser().parse_args(["bridge", "mqtt", "--map", "sensors/+/temp"])
    cli_source = source_from_args(args)
    assert isinstance(cli_source, MqttSource)
    assert (cli_source.host, cli_source.port) == ("mqtt.example", 2883)
    monkeypatch.setenv("RTKIT_MQTT", "mqtt.example:nope")
    with pytest.raises(ConfigurationError, match="RTKIT_MQTT"):
        MqttSource(topics=topics)


def test_the_command_line_builds_amqp_and_postgres_sources() -> None:
    from rtkit.bridges._cli import source_from_args
    from rtkit.bridges.amqp import AmqpSource
    from rtkit.bridges.postgres import PostgresNotifySource, PostgresOutboxSource
    from rtkit.cli import build_parser

    parser = build_parser()
    amqp = source_from_args(
        parser.parse_args(
            ["bridge", "amqp", "--exchange", "plant", "--queue", "q", "--map", "plant.*=p.{1}"]
        )
    )
    assert isinstance(amqp, AmqpSource) and amqp.exchange == "plant" and amqp.queue_name == "q"
    assert amqp.topics.channel("plant.a") == "p.a"
    outbox = source_from_args(
        parser.parse_args(["bridge", "postgres", "--outbox", "app.outbox", "--map", "#"])
    )
    assert isinstance(outbox, PostgresOutboxSource)
    assert outbox.name == "outbox:app.outbox" and outbox.topics.channel("o.eu") == "o.eu"
    # --name names the bridge in the status and keys its position.
    named_args = parser.parse_args(
        ["bridge", "postgres", "--outbox", "outbox", "--name", "orders", "--map", "#"]
    )
    named = source_from_args(named_args)
    assert isinstance(named, PostgresOutboxSource) and named.name == "orders"
    assert named_args.name == "orders"
    listen = source_from_args(
        parser.parse_args(["bridge", "postgres", "--listen", "--map", "orders=orders.live"])
    )
    assert isinstance(listen, PostgresNotifySource)
    assert listen.topics.patterns == ["orders"]


def test_the_command_line_refuses_an_amqp_bridge_with_nothing_to_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rtkit.cli import main

    assert main(["bridge", "amqp", "--map", "#", "--url", "http://127.0.0.1:9"]) == 2
    assert "reads a queue, an exchange or both" in capsys.readouterr().err
