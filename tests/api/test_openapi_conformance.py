"""The OpenAPI document at /openapi.json says what the server does.

schemathesis (its run engine, as `st run` drives it: coverage, fuzzing and stateful phases, every
check it enables by default) runs against a live `daguerre serve` (real uvicorn, SQLite, no
workers: jobs stay queued) with a valid key, derandomised and with a bounded number of examples per
operation. Every failure fails the test, listed with a curl command that reproduces it. The
document's shape (statuses per route, bounds, nullability, headers) and the 405 `Allow` header are
checked on the in-process app first, so a regression there is named precisely.
"""

from __future__ import annotations

import signal
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.engine import Status, events

from support.helpers import scripted_models, start_server

EXAMPLES_PER_OPERATION = 50
"""Bounds the fuzzing and stateful phases; the whole test takes about 10 s on two cores."""

# What schema-valid requests can still be refused for, per operation: rules between fields or about
# stored state that a JSON schema cannot say (api.md §4.2, §8.2, §16, §17). The check still holds
# every other status to "valid data is accepted".
SEMANTIC_REFUSALS: dict[str, tuple[str, ...]] = {
    # source only with image_edit, manga needs a portrait ratio, exactly one of url/data/
    # generation_id/file_id; referenced generations and files that do not exist or are not ready
    # (400); image bytes that do not decode or URLs that do not fetch (413, 422, 503).
    "POST /v1/generations": ("400", "413", "422", "503"),
    # expires_at in the past; inline bytes that are not an image type; an Idempotency-Key that an
    # earlier generated request used with other values (422; also for POST /v1/generations)
    "POST /v1/files": ("400", "422"),
    "POST /v1/files/{file_id}/complete": ("400",),  # no bytes uploaded yet
    "GET /v1/files": ("400",),  # a cursor this server did not mint
    "GET /v1/generations": ("400",),  # a cursor this server did not mint
    "GET /v1/usage": ("400",),  # `to` not after `from`, or a range over 366 days
}
ACCEPTED = ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx")  # schemathesis's default


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    live = start_server(
        root / "data",
        scripted_models(root / "models.toml"),
        # A worker finishes the generations (an instant engine), so that creates with `Prefer: wait`
        # answer at once rather than after up to 60 s.
        workers=1,
        # Generous limits: the run creates hundreds of generations.
        DAGUERRE_DEFAULT_RPM="1000000",
        DAGUERRE_DEFAULT_CONCURRENCY="1000000",
        # A generated https URL must not hold a create for the default 18 s.
        DAGUERRE_URL_TIMEOUT_S="2",
    )
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


def schemathesis_config(key: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20260401,
            "headers": {"Authorization": f"Bearer {key}"},
            # Derandomised, and nothing remembered between runs (no example database, no cache),
            # so every run sends the same requests.
            "generation": {
                "deterministic": True,
                "max-examples": EXAMPLES_PER_OPERATION,
                "database": "none",
            },
            "cache": {"enabled": False},
            "checks": {
                # Files are soft-deleted: a deleted File stays readable, in state `deleted` with its
                # `deleted_at` (api.md §16.3, §16.4), which this check takes for a use after free.
                "use_after_free": {"enabled": False},
            },
            "operations": [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, *refusals]},
                    },
                }
                for name, refusals in SEMANTIC_REFUSALS.items()
            ],
        }
    )


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/files/anything", "DELETE, GET"),
        ("PATCH", "/v1/files", "GET, POST"),
        ("GET", "/v1/files/anything/complete", "POST"),
        ("DELETE", "/v1/generations", "GET, POST"),
        ("POST", "/v1/generations/anything", "GET"),
        ("POST", "/v1/usage", "GET"),
    ],
)
def test_a_wrong_method_is_405_listing_every_method_of_the_path(client, auth, method, path, allow):
    """The router answers 405 from the first route whose path matched; the `Allow` header must name
    the methods of every route of that path (RFC 9110), not only that route's."""
    response = client.request(method, path, headers=auth)
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})
    assert response.headers["allow"] == allow


def test_the_document_lists_what_each_route_answers(client):
    schema = client.get("/openapi.json").json()
    statuses = {
        f"{method.upper()} {path}": set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert statuses == {
        "POST /v1/generations": {"201", "400", "401", "402", "403", "409", "413", "422", "429", "503"},
        "GET /v1/generations/{generation_id}": {"200", "401", "403", "404"},
        "GET /v1/generations": {"200", "400", "401", "403"},
        "POST /v1/generations/{generation_id}/cancel": {"200", "401", "403", "404"},
        "GET /v1/generations/{generation_id}/events": {"200", "401", "403", "404"},
        "GET /v1/generations/{generation_id}/webhooks": {"200", "401", "403", "404"},
        "POST /v1/files": {"201", "400", "401", "403", "409", "413", "422"},
        "GET /v1/files": {"200", "400", "401", "403"},
        "POST /v1/files/{file_id}/complete": {"200", "400", "401", "403", "404"},
        "GET /v1/files/{file_id}": {"200", "401", "403", "404"},
        "DELETE /v1/files/{file_id}": {"204", "401", "403", "404"},
        "GET /v1/usage": {"200", "400", "401", "403"},
    }
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components  # parameter errors are 400 with a string detail
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                assert {"X-Request-Id", "X-API-Version"} <= set(response["headers"]), (path, status)
                if status[0] in "45":
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }

    create = schema["paths"]["/v1/generations"]["post"]["responses"]
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
        create["201"]["headers"]
    )
    assert create["429"]["headers"]["Retry-After"]["required"] is True

    listing = {p["name"]: p["schema"] for p in schema["paths"]["/v1/files"]["get"]["parameters"]}
    assert (listing["limit"]["type"], listing["limit"]["minimum"], listing["limit"]["maximum"]) == (
        "integer",
        1,
        100,
    )
    assert listing["state"]["enum"] == ["pending", "ready", "failed", "deleted"]

    # null is accepted for every optional request field (api.md §4.1), and every response field
    # is always sent, null or not.
    for name in ("model", "type", "style", "web_search", "aspect_ratio", "image_ref", "source"):
        assert {"type": "null"} in components["GenerationCreate"]["properties"][name]["anyOf"], name
    assert {"type": "null"} in components["FileCreate"]["properties"]["purpose"]["anyOf"]
    for name in ("Generation", "File", "FileList", "CreateFileResponse"):
        assert set(components[name]["required"]) == set(components[name]["properties"]), name
    assert {"type": "null"} in components["Generation"]["properties"]["failure_code"]["anyOf"]


def test_the_server_conforms_to_its_openapi_document(server):
    config = schemathesis_config(server.key)
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json", config=config)
    multipart = schema.raw_schema["paths"]["/v1/files"]["post"]["requestBody"]["content"]
    schema.hook(_forms_read_as_sent(multipart["multipart/form-data"]["schema"]))

    started = time.monotonic()
    problems: dict[str, str] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            raise event.exception
        if isinstance(event, events.NonFatalError):
            problems.setdefault(f"{event.label}: {event.info.title}", event.info.format())
        elif isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        key = f"{failure.operation}: {check.name}: {failure.title}"
                        problems.setdefault(key, f"{failure}\n\n{check.failure_info.code_sample}")
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                problems.setdefault(f"{failure.operation}: {failure.title}", str(failure))
            assert event.stop_reason == "completed", event.stop_reason
    elapsed = time.monotonic() - started

    report = "\n\n".join(f"=== {key}\n{detail}" for key, detail in sorted(problems.items()))
    assert not problems, f"{len(problems)} schemathesis failure(s) in {elapsed:.0f} s:\n\n{report}"


def _forms_read_as_sent(form_schema: dict[str, Any]) -> Any:
    """A `filter_failure` hook for false positives of schemathesis 4.32 on multipart bodies.

    A negative multipart body is often valid once encoded: a number becomes its text, an empty list
    sends no part at all. schemathesis reads the body as sent before it reports accepted negative
    data, but cannot read the file part and so reports such requests anyway. Here the form is read
    as the server reads it (the text of each part, the last one of a repeated name, the file part as
    a placeholder) and the failure is dropped only when that form satisfies the form's schema."""
    validator = jsonschema_rs.validator_for(form_schema)

    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        if not isinstance(failure, AcceptedNegativeData):
            return True
        content_type = response.request.headers.get("Content-Type", "")
        body = response.request.body
        if not content_type.startswith("multipart/form-data") or not isinstance(body, bytes):
            return True
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        form: dict[str, str] = {}
        for part in BytesParser(policy=HTTP).parsebytes(head + body).iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            text = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
            form[name] = "<file part>" if part.get_filename() is not None else text
        return not validator.is_valid(form)

    return filter_failure
