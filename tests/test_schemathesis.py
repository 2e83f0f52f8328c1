"""schemathesis against the live server's own /openapi.json: no 5xx, answers as documented.

Every operation gets a bounded number of generated requests, in several roles: the owner of
the client id in the path (also a publisher), a valid token with generated client ids (mostly
somebody else's), no token at all, and the owner sending deliberately invalid input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

# Imported here, at collection, not lazily by from_url() inside a test: once, under CPython
# 3.11.7, compiling it there deep in the test's stack raised "AST constructor recursion depth
# mismatch" (a CPython bug).
from schemathesis.specs.openapi import schemas as _schemas  # noqa: F401
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ServerProcess, bearer

pytestmark = pytest.mark.timeout(600)

# Generating this route's nested body has twice hit that same CPython bug inside Hypothesis
# (replayed as "Inconsistent results"). Its bad bodies are covered by tests/test_push_api.py.
CPYTHON_AST_BUG = {"POST /api/clients/{clientID}/push-subscriptions"}
# An open stream never ends, so it has no answer to check; tests/test_stream*.py cover it.
NEVER_ENDS = {"GET /api/clients/{clientID}/notifications/stream"}


EXAMPLES_PER_OPERATION = 20
OWNER = "schema-owner"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder: Path = tmp_path_factory.mktemp("schemathesis")
    server = ServerProcess.in_folder(folder).start()
    yield server
    server.stop()


ROLES: dict[str, dict[str, Any]] = {
    "owner": {"token": True, "own_path": True, "mode": GenerationMode.POSITIVE},
    "generated-client-ids": {"token": True, "own_path": False, "mode": GenerationMode.POSITIVE},
    "anonymous": {"token": False, "own_path": False, "mode": GenerationMode.POSITIVE},
    "owner-invalid-input": {"token": True, "own_path": True, "mode": GenerationMode.NEGATIVE},
}


@pytest.mark.parametrize("role", ROLES)
def test_openapi_operations_conform_and_never_fail(live: ServerProcess, role: str) -> None:
    spec = ROLES[role]
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    headers = bearer(OWNER, publisher=True) if spec["token"] else {}
    failures: list[str] = []
    operations = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            if operation.label in CPYTHON_AST_BUG or operation.label in NEVER_ENDS:
                continue
            path_parameters = (
                {"clientID": OWNER} if spec["own_path"] and "{clientID}" in operation.path else None
            )
            strategy = operation.as_strategy(
                generation_mode=spec["mode"], path_parameters=path_parameters
            )

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def exercise(case: schemathesis.Case) -> None:
                response = case.call(base_url=live.url, session=session, headers=headers)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                exercise()
            except Unsatisfiable:
                # Invalid input needs something to spoil: an operation with no body and no
                # free parameter has none.
                assert spec["mode"] is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # one report for every operation, not just the first
                failures.append(f"{operation.label}: {exc}")
    assert operations >= 10, "the OpenAPI document lost its routes"
    assert not failures, "\n\n".join(failures)
