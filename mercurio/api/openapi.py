"""The OpenAPI document, completed where FastAPI cannot see what the service accepts.

The routes check their ids and slugs themselves (to answer 400 with the project's error
shape, not FastAPI's 422), so FastAPI only knows them as strings. Here the document gains
those patterns, by the names the contract gives them, from the same compiled patterns the
validators use; the bearer scheme in place of a free-form Authorization header; and the SSE
stream, which a raw ASGI endpoint serves outside the framework.
"""

from __future__ import annotations

from typing import Any

from mercurio.model import CATEGORY_PATTERN, CLIENT_ID_PATTERN, EVENT_ID_PATTERN, TOPIC_PATTERN

Schema = dict[str, Any]

BEARER = "bearer"
ERROR_BODY = "#/components/schemas/ErrorBody"  # declared on every route (api.errors)
STREAM_PATH = "/api/clients/{clientID}/notifications/stream"
MAX_NOTIFICATION_ID = 10**18 - 1  # parse_notification_id takes up to 18 digits
CLIENT_ID: Schema = {
    "type": "string",
    "pattern": f"^{CLIENT_ID_PATTERN.pattern}$",
    "maxLength": 128,
}
CATEGORY: Schema = {"type": "string", "pattern": f"^{CATEGORY_PATTERN.pattern}$", "maxLength": 32}
EVENT_ID: Schema = {"type": "string", "pattern": f"^{EVENT_ID_PATTERN.pattern}$", "maxLength": 200}
TOPIC: Schema = {"type": "string", "pattern": f"^{TOPIC_PATTERN.pattern}$", "maxLength": 64}
# Digits, not all zeros: what parse_notification_id and the subscription routes take.
NUMERIC_ID: Schema = {"type": "string", "pattern": "^0*[1-9][0-9]*$", "maxLength": 18}
NO_NUL: Schema = {"type": "string", "pattern": "^[^\\x00]*$"}

PARAMETERS: dict[str, Schema] = {
    "clientID": CLIENT_ID,
    "notificationID": NUMERIC_ID,
    "subscriptionID": NUMERIC_ID,
    "category": CATEGORY,
    "topic": TOPIC,
    "status": {"type": "string", "enum": ["all", "read", "unread"], "default": "all"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    "before": {"type": "integer", "minimum": 1, "maximum": MAX_NOTIFICATION_ID},
    # The unsubscribe link's client id and signature: both always in a real link.
    "c": CLIENT_ID,
    "s": {"type": "string", "minLength": 1, "maxLength": 128},
}
REQUIRED_QUERY = frozenset({"c", "s"})

# Publish bodies' `data`: any JSON the store can keep (no NUL in text; JSON has no NaN).
JSON_DATA: Schema = {
    "description": "Any JSON value; text (keys included) must not contain NUL.",
    "anyOf": [
        NO_NUL,
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonData"}},
        {
            "type": "object",
            "propertyNames": NO_NUL,
            "additionalProperties": {"$ref": "#/components/schemas/JsonData"},
        },
    ],
}


def complete(schema: Schema, max_destinations: int) -> Schema:
    """schema (FastAPI's document), completed in place; returned for convenience."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT signed with the service's key; the caller is its user_id claim.",
    }
    schemas = components.setdefault("schemas", {})
    schemas["JsonData"] = JSON_DATA
    for model in schemas.values():
        _complete_body(model, max_destinations)
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            _complete_operation(operation)
    schema["paths"][STREAM_PATH] = {"get": _stream_operation()}
    return schema


def _complete_operation(operation: Schema) -> None:
    parameters = operation.get("parameters", [])
    authorized = any(p["name"].lower() == "authorization" for p in parameters)
    kept = [p for p in parameters if p["name"].lower() != "authorization"]
    for parameter in kept:
        known = PARAMETERS.get(parameter["name"])
        if known is not None:
            parameter["schema"] = {**known, "title": parameter["schema"].get("title")}
        if parameter["name"] in REQUIRED_QUERY:
            parameter["required"] = True
    operation["parameters"] = kept
    if authorized:
        operation["security"] = [{BEARER: []}]
    # The raw HTTP layer answers any route so before routing.
    operation.setdefault("responses", {}).setdefault(
        "414", {"description": "The request URL is longer than the server takes"}
    )
    for answer in operation.get("responses", {}).values():
        for content in answer.get("content", {}).values():
            # A declared answer model beside FastAPI's schema of the route's `dict` return:
            # the model alone says what the answer is.
            declared = content.get("schema", {}).get("$ref")
            if declared is not None:
                content["schema"] = {"$ref": declared}


def _complete_body(model: Schema, max_destinations: int) -> None:
    properties = model.get("properties", {})
    for name, known in (
        ("destinationID", CLIENT_ID),
        ("userID", CLIENT_ID),
        ("category", CATEGORY),
        ("topic", TOPIC),
    ):
        if name in properties and properties[name].get("type") == "string":
            properties[name].update(known)
    if "sourceID" in properties:
        properties["sourceID"].update(NO_NUL)
    if "data" in properties and "sourceID" in properties:
        properties["data"] = {"$ref": "#/components/schemas/JsonData"}
    event_id = properties.get("id", {})
    for branch in event_id.get("anyOf", []):
        if branch.get("type") == "string":
            branch.update(EVENT_ID)
    if "destinations" in properties:
        properties["destinations"] = {
            "description": 'Client ids (one notification each), or ["*"]: everyone.',
            "anyOf": [
                {"type": "array", "items": CLIENT_ID, "minItems": 1, "maxItems": max_destinations},
                {"type": "array", "items": {"const": "*"}, "minItems": 1, "maxItems": 1},
            ],
        }
    muted = properties.get("mutedCategories")
    if muted is not None:
        muted["items"] = CATEGORY
    if "email" in properties:
        properties["email"]["format"] = "email"


def _stream_operation() -> Schema:
    """The SSE stream, served by mercurio.api.stream outside FastAPI."""

    def query(name: str, schema: Schema, description: str) -> Schema:
        return {"name": name, "in": "query", "schema": schema, "description": description}

    errors = {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}},
        }
        for status, description in (
            (400, "Bad clientID, Last-Event-ID or categories"),
            (401, "No or bad credentials, a spent ticket, or a token in the URL"),
            (403, "The token is another client's"),
            (429, "Too many open streams for this client"),
        )
    }
    return {
        "tags": ["notifications"],
        "summary": "Stream",
        "operationId": "stream_notifications",
        "description": (
            "Server-sent events: each notification is an unnamed event whose `id:` is its "
            "notificationID and whose `data:` is `{notificationID, eventID, sourceID, "
            "clientID, data, category, createdAt}`; read-state changes are `read-state` "
            "events. Credentials: the bearer token, the `mercurio_token` cookie, or a "
            "single-use `ticket` from POST …/stream-tickets (never a token in the URL). "
            "Resume with the `Last-Event-ID` header or `lastEventId`."
        ),
        "parameters": [
            {"name": "clientID", "in": "path", "required": True, "schema": CLIENT_ID},
            {
                "name": "Last-Event-ID",
                "in": "header",
                "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "description": "The last notificationID received: the missed ones come first.",
            },
            query("lastEventId", {"type": "string", "pattern": "^[0-9]{1,18}$"}, "As the header."),
            query("ticket", {"type": "string"}, "A single-use stream ticket."),
            query(
                "categories",
                {"type": "string", "pattern": "^[a-z0-9][a-z0-9_,-]*$"},
                "Comma-separated categories: only these are streamed.",
            ),
        ],
        "security": [{BEARER: []}, {}],
        "responses": {
            "200": {
                "description": "The event stream, until the client leaves or the server ends it.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **errors,
        },
    }
