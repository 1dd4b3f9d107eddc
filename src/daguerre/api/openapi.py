"""The OpenAPI document at /openapi.json: what the routes declare, and what `finish` adds to it.

Routes declare the error statuses they can answer with `errors(...)`; every error body is
`{"detail": str}` (ErrorBody). `finish` then makes FastAPI's generated document say what the
server does (tests/api/test_openapi_conformance.py checks it against a live server):

* FastAPI's automatic 422 (a list-shaped validation body) is removed: a parameter FastAPI cannot
  read is answered 400 with a string detail here (app.py's validation handler);
* every optional request field is nullable: `null` is accepted wherever a field may be left out
  (api.md §4.1), which pydantic's schema of a field with a default does not say;
* query parameters have no `null` branch: a query string has no null, only a missing parameter;
* every response carries `X-Request-Id` and `X-API-Version` (api.md §1).
"""

from __future__ import annotations

from typing import Any

from daguerre.wire import API_VERSION, ErrorBody

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid parameters",
    401: "Missing or bad API key",
    402: "Insufficient balance; nothing queued, nothing charged",
    403: "Account suspended or deactivated",
    404: "Not found",
    413: "Request body or an input image too large",
    422: "Bad media data",
    429: "Rate limit exceeded or too many concurrent jobs",
    503: "URL ingestion unavailable",
}

Responses = dict[int | str, dict[str, Any]]


def errors(*statuses: int, descriptions: dict[int, str] | None = None) -> Responses:
    """The `responses` of a route for these error statuses, each with the `{"detail": str}` body."""
    texts = {**ERROR_DESCRIPTIONS, **(descriptions or {})}
    return {status: {"model": ErrorBody, "description": texts[status]} for status in statuses}


IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "daguerre extension: a repeat with the same key and request within 24 hours "
    "creates nothing and answers the first resource (`Idempotent-Replayed: true`); the same key with "
    "another request is 422.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}

PREFER_WAIT_PARAMETER: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "daguerre extension (RFC 7240): `wait` or `wait=N` (N <= 60 s) answers once the "
    "generation has ended or N seconds have passed, whichever is first; 201 either way, with "
    "`Preference-Applied`.",
    # Any value: preferences a server does not understand are ignored (RFC 7240).
    "schema": {"type": "string", "examples": ["wait", "wait=10"]},
}

PREFERENCE_APPLIED_HEADER: dict[str, dict[str, Any]] = {
    "Preference-Applied": {
        "description": "`wait=N` when the request's `Prefer: wait` was honoured",
        "schema": {"type": "string"},
    }
}

CANCEL_AFTER_PARAMETER: dict[str, Any] = {
    "name": "Cancel-After",
    "in": "header",
    "required": False,
    "description": "daguerre extension: a generation not ended this long after the create fails with "
    '`generation_failed`, "Deadline exceeded", and is refunded. `30s`, `5m`, `1h` or seconds; at '
    "least 5 s, at most the active-job TTL (400 otherwise).",
    "schema": {"type": "string", "pattern": "^[0-9]{1,9}(s|m|h)?$"},
}

AUTH_ERRORS = (401, 403)
"""What every route that takes an API key can answer before it does anything else (api.md §2)."""

RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "X-RateLimit-Limit": {
        "description": "Creates allowed per minute (absent while the limiter's store is down)",
        "schema": {"type": "integer", "minimum": 1},
    },
    "X-RateLimit-Remaining": {
        "description": "Creates left in the current window",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Reset": {
        "description": "When the window frees up, in Unix seconds",
        "schema": {"type": "integer", "minimum": 0},
    },
}
"""On a create's 201 and its requests-per-minute 429 (api.md §9)."""

RETRY_AFTER_HEADER: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "required": True,
        "description": "Seconds to wait: computed for the per-minute limit, 60 for concurrent jobs",
        "schema": {"type": "integer", "minimum": 1},
    }
}

COMMON_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "required": True,
        "description": "The caller's X-Request-Id echoed back, otherwise a new UUID",
        "schema": {"type": "string", "minLength": 1},
    },
    "X-API-Version": {
        "required": True,
        "description": "The API version",
        "schema": {"type": "string", "enum": [API_VERSION]},
    },
}

_VALIDATION_ERROR_REF = "#/components/schemas/HTTPValidationError"
_NULL = {"type": "null"}
# Keywords that describe a property rather than constrain its value; they stay outside an anyOf.
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")


def finish(schema: dict[str, Any], request_models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The generated document made to match the server; `request_models` are the JSON schemas of
    the request bodies (with their `$defs`), which the generations and files routes read
    themselves and so are added here as components."""
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, request_schema in request_models.items():
        definitions = request_schema.pop("$defs", {})
        for model in (request_schema, *definitions.values()):
            _nullable_optionals(model)
        components.update(definitions)
        components[name] = request_schema
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query":
                    parameter["schema"] = _without_null(parameter["schema"])
            responses = operation.get("responses", {})
            automatic = responses.get("422", {}).get("content", {}).get("application/json", {})
            if automatic.get("schema", {}).get("$ref") == _VALIDATION_ERROR_REF:
                del responses["422"]
            for response in responses.values():
                response["headers"] = {**COMMON_HEADERS, **response.get("headers", {})}
    text = repr(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            components.pop(unused, None)
    return schema


def _nullable_optionals(model: dict[str, Any]) -> None:
    """Every property that may be left out may also be `null`."""
    required = set(model.get("required", ()))
    for name, prop in model.get("properties", {}).items():
        if name not in required and not _allows_null(prop):
            model["properties"][name] = _with_null(prop)


def _allows_null(prop: dict[str, Any]) -> bool:
    kind = prop.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(branch) for branch in [*prop.get("anyOf", ()), *prop.get("oneOf", ())])


def _with_null(prop: dict[str, Any]) -> dict[str, Any]:
    outer = {key: prop[key] for key in _ANNOTATIONS if key in prop}
    inner = {key: value for key, value in prop.items() if key not in _ANNOTATIONS}
    return {"anyOf": [inner, dict(_NULL)], **outer}


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    branches = [branch for branch in prop.get("anyOf", ()) if branch != _NULL]
    if "anyOf" not in prop or len(branches) != 1:
        return prop
    outer = {key: value for key, value in prop.items() if key != "anyOf"}
    return {**branches[0], **outer}
