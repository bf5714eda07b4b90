"""The OpenAPI 3.1 document of the hub's HTTP API (:mod:`.http_api`),
served at ``/api/openapi.json``; a test validates real responses of every
endpoint against it, so it stays true."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..protocol import MAX_HISTORY_LIMIT, MAX_PUBLISH_BATCH

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


_ERRORS = {
    "400": "bad_request: the body, a parameter or the method is wrong",
    "401": "unauthorized: no credential, a bad or expired token, a wrong API key",
    "403": "forbidden: the token does not grant this channel, room or action",
    "404": "not_found: no such endpoint",
    "413": "too_large: the body, a payload or a batch is over its cap",
    "429": "rate_limited: over the caller's budget; see Retry-After",
    "500": "internal: see the hub's log",
    "503": "unavailable: the hub is stopping or lost its store; retry",
}


def _responses(schema: str, description: str, *codes: str) -> dict[str, Any]:
    out: dict[str, Any] = {"200": _ok(schema, description)}
    for code in ("400", "401", "403", *codes, "429", "500", "503"):
        out[code] = {"description": _ERRORS[code], "content": {_JSON: {"schema": _ref("Error")}}}
    return out


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _seq_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0},
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["ok", "error"],
        "properties": {
            "ok": {"const": False},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "enum": [
                            "bad_request",
                            "unauthorized",
                            "forbidden",
                            "not_found",
                            "too_large",
                            "rate_limited",
                            "unavailable",
                            "internal",
                        ]
                    },
                    "message": {"type": "string"},
                },
            },
        },
    },
    "Message": {
        "description": "One message to publish. 'id' makes the publish idempotent: "
        "the same sender and id within the hub's dedup window get the first seq.",
        "type": "object",
        "required": ["channel", "data"],
        "properties": {
            "channel": {"type": "string"},
            "data": {"description": "any JSON value"},
            "id": {"type": "string", "minLength": 1},
        },
        "additionalProperties": False,
    },
    "ChannelMessage": {
        "description": "A message to the channel named in the path.",
        "type": "object",
        "required": ["data"],
        "properties": {"data": {}, "id": {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    },
    "Batch": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PUBLISH_BATCH,
                "items": _ref("Message"),
            }
        },
    },
    "ChannelBatch": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PUBLISH_BATCH,
                "items": _ref("ChannelMessage"),
            }
        },
    },
    "Published": {
        "type": "object",
        "required": ["ok", "seq", "ts"],
        "properties": {
            "ok": {"const": True},
            "seq": {"type": "integer", "minimum": 1},
            "ts": {"type": "number"},
            "duplicate": {"const": True},
        },
    },
    "PublishedBatch": {
        "description": "One seq and ts per message, in order; null for a message "
        "refused on its own, whose error is in 'errors'.",
        "type": "object",
        "required": ["ok", "seqs", "ts"],
        "properties": {
            "ok": {"const": True},
            "seqs": {"type": "array", "items": {"type": ["integer", "null"]}},
            "ts": {"type": "array", "items": {"type": ["number", "null"]}},
            "errors": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"type": "null"},
                        {"$ref": "#/components/schemas/Error/properties/error"},
                    ]
                },
            },
        },
    },
    "Envelope": {
        "type": "object",
        "required": ["channel", "seq", "ts", "id", "sender", "data"],
        "properties": {
            "channel": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "ts": {"type": "number"},
            "id": {"type": "string"},
            "sender": {"type": "string"},
            "data": {},
        },
    },
    "History": {
        "type": "object",
        "required": ["ok", "messages", "seq", "epoch", "complete"],
        "properties": {
            "ok": {"const": True},
            "messages": {"type": "array", "items": _ref("Envelope")},
            "seq": {"type": "integer", "minimum": 0},
            "epoch": {"type": "string"},
            "complete": {"type": "boolean"},
            "more": {"const": True},
        },
    },
    "ChannelFigures": {
        "type": "object",
        "required": [
            "subscribers",
            "seq",
            "rate",
            "bytes_rate",
            "bytes",
            "published",
            "publishers",
            "last_activity",
        ],
        "properties": {
            "subscribers": {
                "type": "integer",
                "minimum": 0,
                "description": "subscribers connected to this hub",
            },
            "seq": {"type": "integer", "minimum": 0},
            "rate": {
                "type": "number",
                "minimum": 0,
                "description": "messages/s stored (by any hub), last 10 s",
            },
            "bytes_rate": {
                "type": "number",
                "minimum": 0,
                "description": "payload bytes/s published through this hub, last 10 s",
            },
            "bytes": {
                "type": "integer",
                "minimum": 0,
                "description": "payload bytes published through this hub since start",
            },
            "published": {
                "type": "integer",
                "minimum": 0,
                "description": "publishes taken in by this hub since start (resends included)",
            },
            "publishers": {
                "type": "integer",
                "minimum": 0,
                "description": "users publishing through this hub, last 10 s",
            },
            "last_activity": {
                "type": ["number", "null"],
                "description": "unix time of the last message seen",
            },
        },
    },
    "Channels": {
        "type": "object",
        "required": ["ok", "channels"],
        "properties": {
            "ok": {"const": True},
            "channels": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/ChannelFigures"},
            },
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "ok",
            "state",
            "connections",
            "users",
            "channels",
            "connections_by_user",
            "slow_consumers",
            "bridges",
        ],
        "properties": {
            "ok": {"const": True},
            "state": {"type": "string"},
            "connections": {"type": "integer", "minimum": 0},
            "users": {"type": "integer", "minimum": 0},
            "channels": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/ChannelFigures"},
            },
            "connections_by_user": {
                "type": "object",
                "description": "the users with the most connections to this hub (top 20)",
                "additionalProperties": {"type": "integer", "minimum": 1},
            },
            "slow_consumers": {
                "type": "object",
                "required": ["disconnected", "queued"],
                "properties": {
                    "disconnected": {"type": "integer", "minimum": 0},
                    "queued": {
                        "type": "array",
                        "description": "connections with packets waiting, most first",
                        "items": {
                            "type": "object",
                            "required": ["sid", "user", "packets", "bytes"],
                        },
                    },
                },
            },
            "webhooks": {
                "type": "object",
                "description": "lifecycle webhooks' delivery counters (only when configured)",
                "required": [
                    "url",
                    "hub",
                    "sent",
                    "batches",
                    "failed_attempts",
                    "dropped",
                    "rejected",
                    "queued",
                    "in_flight",
                    "last_error",
                ],
                "properties": {
                    "url": {"type": "string", "description": "credentials masked"},
                    "hub": {"type": "string", "description": "this hub's id in webhook events"},
                    "sent": {"type": "integer", "minimum": 0},
                    "batches": {"type": "integer", "minimum": 0},
                    "failed_attempts": {"type": "integer", "minimum": 0},
                    "dropped": {"type": "integer", "minimum": 0},
                    "rejected": {"type": "integer", "minimum": 0},
                    "queued": {"type": "integer", "minimum": 0},
                    "in_flight": {"type": "integer", "minimum": 0},
                    "last_error": {"type": ["string", "null"]},
                },
            },
            "bridges": {
                "type": "object",
                "description": "bridges reporting to any hub of this store, by name",
                "additionalProperties": {
                    "type": "object",
                    "required": ["bridge", "status", "age"],
                    "properties": {
                        "bridge": {"type": "string"},
                        "status": {
                            "enum": [
                                "connecting",
                                "connected",
                                "disconnected",
                                "stopped",
                                "stale",
                                "unknown",
                            ]
                        },
                        "age": {"type": ["number", "null"], "minimum": 0},
                        "connected": {"type": "boolean"},
                        "hub_connected": {"type": "boolean"},
                        "lag": {"type": ["integer", "null"]},
                        "last_position": {"type": ["string", "null"]},
                        "errors": {"type": "integer", "minimum": 0},
                        "last_error": {"type": ["string", "null"]},
                    },
                },
            },
        },
    },
    "Members": {
        "type": "object",
        "required": ["ok", "members"],
        "properties": {
            "ok": {"const": True},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "user", "name", "color", "state", "connections"],
                    "properties": {
                        "id": {"type": "string"},
                        "user": {"type": "string"},
                        "name": {"type": "string"},
                        "color": {"type": "string"},
                        "state": {"type": "object"},
                        "connections": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    },
    "Disconnected": {
        "type": "object",
        "required": ["ok", "disconnected"],
        "properties": {
            "ok": {"const": True},
            "disconnected": {"type": "integer", "minimum": 0},
        },
    },
}


def openapi_document(server_url: str = "/api") -> dict[str, Any]:
    """The OpenAPI 3.1 document, with ``server_url`` as the API's base
    (``/api`` standalone, ``{base_url}rtkit/api`` inside Jupyter)."""
    channel = _path_param("channel", "the channel name (percent-encoded)")
    publish_one_or_batch = {
        "required": True,
        "content": {_JSON: {"schema": {"oneOf": [_ref("Message"), _ref("Batch")]}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rtkit hub HTTP API",
            "version": __version__,
            "description": "Publish, read history, list channels and room members, "
            "and disconnect users over HTTP. Errors use the wire protocol's codes.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/publish": {
                "post": {
                    "summary": "Publish one message, or a batch stored in order",
                    "operationId": "publish",
                    "requestBody": publish_one_or_batch,
                    "responses": _responses(
                        "PublishedAny", "the seq of each message stored", "413"
                    ),
                }
            },
            "/status": {
                "get": {
                    "summary": "The hub's status: channels, users, slow consumers (API key)",
                    "operationId": "status",
                    "responses": _responses("Status", "the hub's status"),
                }
            },
            "/channels": {
                "get": {
                    "summary": "Channels seen by this hub, with their figures",
                    "operationId": "channels",
                    "responses": _responses("Channels", "channels the caller may read"),
                }
            },
            "/channels/{channel}/messages": {
                "parameters": [channel],
                "post": {
                    "summary": "Publish to this channel: one message or a batch",
                    "operationId": "publishToChannel",
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {
                                "schema": {"oneOf": [_ref("ChannelMessage"), _ref("ChannelBatch")]}
                            }
                        },
                    },
                    "responses": _responses(
                        "PublishedAny", "the seq of each message stored", "413"
                    ),
                },
                "get": {
                    "summary": "History: messages after 'since' (oldest first) or the newest",
                    "operationId": "history",
                    "parameters": [
                        _seq_param("since", "messages after this seq"),
                        _seq_param("before", "messages before this seq"),
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_HISTORY_LIMIT,
                            },
                        },
                    ],
                    "responses": _responses("History", "the messages, in seq order"),
                },
            },
            "/rooms/{room}/members": {
                "parameters": [_path_param("room", "the presence room")],
                "get": {
                    "summary": "Members of a presence room",
                    "operationId": "members",
                    "responses": _responses("Members", "one member per user"),
                },
            },
            "/users/{user}/disconnect": {
                "parameters": [_path_param("user", "the user id")],
                "post": {
                    "summary": "Disconnect every connection of a user (API key only)",
                    "operationId": "disconnect",
                    "responses": _responses("Disconnected", "how many connections ended"),
                },
            },
        },
        "components": {
            "schemas": {
                **_SCHEMAS,
                "PublishedAny": {"oneOf": [_ref("Published"), _ref("PublishedBatch")]},
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
