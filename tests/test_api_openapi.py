"""The OpenAPI document of a real server says what the routes accept and answer."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mercurio.model import CATEGORY_PATTERN, CLIENT_ID_PATTERN
from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id

pytestmark = pytest.mark.timeout(60)

STREAM = "/api/clients/{clientID}/notifications/stream"


@pytest.fixture(scope="module")
def document(server: ServerProcess) -> dict[str, Any]:
    answer = httpx.get(server.url + "/openapi.json", timeout=10)
    assert answer.status_code == 200
    return dict(answer.json())


def operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_the_stream_route_is_documented_as_server_sent_events(document: dict[str, Any]) -> None:
    stream = document["paths"][STREAM]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    names = {p["name"] for p in stream["parameters"]}
    assert {"clientID", "Last-Event-ID", "lastEventId", "ticket", "categories"} <= names
    assert "token" not in names  # never a token in the URL
    assert stream["security"] == [{"bearer": []}, {}]  # or a ticket, or the cookie


def test_tokens_are_a_bearer_scheme_not_a_free_form_header(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    secured = 0
    for label, operation in operations(document):
        names = [p["name"].lower() for p in operation.get("parameters", [])]
        assert "authorization" not in names, label
        secured += "security" in operation
    assert secured >= 15
    assert "security" not in document["paths"]["/"]["get"]


def test_ids_and_categories_carry_the_validators_patterns(document: dict[str, Any]) -> None:
    seen: dict[str, set[str]] = {}
    for _, operation in operations(document):
        for parameter in operation.get("parameters", []):
            pattern = parameter["schema"].get("pattern")
            if pattern is not None:
                seen.setdefault(parameter["name"], set()).add(pattern)
    assert seen["clientID"] == {f"^{CLIENT_ID_PATTERN.pattern}$"}
    assert seen["category"] == {f"^{CATEGORY_PATTERN.pattern}$"}
    number = seen["notificationID"].pop()
    for accepted in ("1", "42", "007", "9" * 18):
        assert re.fullmatch(number, accepted)
    for refused in ("0", "000", "-1", "1.5", "x"):
        assert not re.fullmatch(number, refused)
    unicast = document["components"]["schemas"]["UnicastIn"]["properties"]
    assert unicast["destinationID"]["pattern"] == f"^{CLIENT_ID_PATTERN.pattern}$"
    assert unicast["category"]["pattern"] == f"^{CATEGORY_PATTERN.pattern}$"
    muted = document["components"]["schemas"]["PreferencesIn"]["properties"]["mutedCategories"]
    assert muted["items"]["pattern"] == f"^{CATEGORY_PATTERN.pattern}$"


async def test_list_and_get_answers_are_typed_and_match_real_answers(
    document: dict[str, Any], api: httpx.AsyncClient
) -> None:
    base = "/api/clients/{clientID}/notifications"
    page_ref = document["paths"][base]["get"]["responses"]["200"]["content"]["application/json"]
    one_ref = document["paths"][base + "/{notificationID}"]["get"]["responses"]["200"]
    assert page_ref["schema"] == {"$ref": "#/components/schemas/NotificationPage"}
    assert one_ref["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NotificationOut"
    }
    schemas = document["components"]["schemas"]
    client_id = new_client_id()
    published = await api.post(
        "/api/events/unicast",
        json={"sourceID": "s", "destinationID": client_id, "data": {"n": 1}},
        headers=PUBLISHER,
    )
    nid = published.json()["notificationID"]
    await api.put(f"/api/clients/{client_id}/notifications/{nid}/read", headers=bearer(client_id))
    listed = (
        await api.get(f"/api/clients/{client_id}/notifications", headers=bearer(client_id))
    ).json()
    assert set(listed) == set(schemas["NotificationPage"]["properties"])
    # expiresAt is there only for a notification that expires
    declared = set(schemas["NotificationOut"]["properties"]) - {"expiresAt"}
    assert set(listed["notifications"][0]) == declared


def test_a_schema_valid_contact_address_is_accepted(
    document: dict[str, Any], server: ServerProcess
) -> None:
    """The schema says the field is an e-mail address (schemathesis once sent any string and
    got 422s); what a generator makes of that must be taken, not refused by email-validator."""
    email = document["components"]["schemas"]["ContactIn"]["properties"]["email"]
    assert email["format"] == "email"
    user = new_client_id()

    @settings(max_examples=25, deadline=None, database=None)
    @given(address=st.emails())
    def accepted(address: str) -> None:
        answer = httpx.put(
            f"{server.url}/api/clients/{user}/contact",
            headers=bearer(user),
            json={"email": address},
            timeout=10,
        )
        assert answer.status_code == 200, (address, answer.text)

    accepted()
