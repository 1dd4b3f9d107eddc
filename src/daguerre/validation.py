"""Request bodies -> wire models, with Luma's documented 400 details, in the documented order.

The order is part of the contract: the body must be an object, then `model` is checked, then
`type`, then the other fields in the order of the spec's table. Every rejection is an
`ApiError(400, detail)`; the first failing rule wins. `null` is accepted for every optional field;
unknown keys (and the `video` / `layering` options of other types) are ignored.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from daguerre.errors import ApiError
from daguerre.wire import (
    ACCEPTED_MIME_TYPES,
    ASPECT_RATIOS,
    CALLBACK_URL_MAX_CHARS,
    FILE_PURPOSES,
    FILENAME_MAX_CHARS,
    IMAGE_REF_SOURCES,
    MAX_IMAGE_REFS,
    MAX_INPUT_IMAGE_BYTES,
    MIME_TYPE_ALIASES,
    MODELS,
    OUTPUT_FORMATS,
    PORTRAIT_RATIOS,
    PROMPT_MAX_CHARS,
    STYLES,
    UNAVAILABLE_MODELS,
    USER_ID_MAX_CHARS,
    Detail,
    FileCreate,
    GenerationCreate,
    GenerationType,
    ImageRef,
)

log = logging.getLogger(__name__)

_KNOWN_KEYS = frozenset(GenerationCreate.model_fields) | {"video", "layering"}
_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean", list: "array", dict: "object"}


def _bad(detail: str) -> ApiError:
    return ApiError(400, detail)


# JSON bodies ---------------------------------------------------------------------------------------

MAX_JSON_VALUES = 50_000
"""Most `{`, `[`, `,` and `:` a JSON body may hold. A real request has a few dozen (its bulk is
base64 text, which has none); a body of millions of tiny values takes seconds to parse on the
event loop (measured: 15 MB of `{}` took 0.9 s), so it is refused before parsing. Counting is a
C-speed byte scan (about 12 ms for 20 MB)."""
_SMALL_BODY = 64 * 1024  # smaller bodies parse in milliseconds whatever they hold: not counted
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_json_body(raw: bytes) -> Any:
    """A request body decoded as JSON, or ApiError 400 with a string detail.

    Refused: text that is not JSON (or not UTF-8), nesting deeper than Python's parser can follow,
    more than MAX_JSON_VALUES values, and strings holding a lone UTF-16 surrogate (`"\\ud800"`
    is valid JSON, but no UTF-8 text, log line or database can hold it).
    """
    if len(raw) > _SMALL_BODY and sum(raw.count(c) for c in (b"{", b"[", b",", b":")) > MAX_JSON_VALUES:
        raise _bad(Detail.BODY_TOO_MANY_VALUES)
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _bad(Detail.BODY_TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise _bad(Detail.BODY_NOT_JSON) from None
    if _SURROGATE_ESCAPE.search(raw):  # only escaped surrogates can be lone ones; pairs are fine
        path = _lone_surrogate(value, "")
        if path is not None:
            raise _bad(f"{path or 'request'}: must not contain a lone surrogate (\\ud800-\\udfff)")
    return value


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (or object key) holding a lone surrogate, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _lone_surrogate(key, path) is not None:
                return path
            items.append((f"{path}.{key}" if path else key, item))
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    for item_path, item in items:
        found = _lone_surrogate(item, item_path)
        if found is not None:
            return found
    return None


# Durations -----------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d{1,9})(s|m|h)?")
_UNIT_S = {None: 1, "s": 1, "m": 60, "h": 3600}
MIN_CANCEL_AFTER_S = 5


def parse_cancel_after(value: str, max_s: float) -> int:
    """The seconds of a `Cancel-After` header: `30s`, `5m`, `1h` or bare seconds, between
    MIN_CANCEL_AFTER_S and `max_s` (the active-job TTL); 400 otherwise."""
    match = _DURATION.fullmatch(value.strip())
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)] if match else None
    if seconds is None or not MIN_CANCEL_AFTER_S <= seconds <= max_s:
        raise ApiError(
            400,
            f"Cancel-After: must be a duration from {MIN_CANCEL_AFTER_S} s to {max_s:g} s "
            "(e.g. 30s, 5m, 1h, or seconds)",
        )
    return seconds


# Timestamps ----------------------------------------------------------------------------------------


def parse_timestamp(value: str, name: str, expected: str = "an ISO-8601 datetime") -> datetime:
    """An ISO-8601 date-time (or date: its midnight) as an aware UTC datetime, or ApiError 400
    naming the parameter. A value without an offset is UTC. Values whose UTC form falls outside
    the years 1-9999 (`0001-01-01T00:00:00+01:00`) are refused here, not by the database."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"{name}: must be {expected}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise _bad(f"{name}: out of range") from None


def _optional(body: dict[str, Any], field: str, expected: type, label: str | None = None) -> Any:
    """The field's value, or None when absent or null; 400 when it has the wrong JSON type."""
    value = body.get(field)
    if value is None:
        return None
    # bool is a subclass of int in Python, but JSON tells them apart; only str/bool/list/dict here.
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise _bad(Detail.wrong_type(label or field, _JSON_TYPES[expected]))
    return value


def parse_generation_create(body: Any) -> GenerationCreate:
    """Validate a decoded JSON body of `POST /v1/generations`."""
    if not isinstance(body, dict):
        raise _bad(Detail.BODY_NOT_OBJECT)
    unknown = set(body) - _KNOWN_KEYS
    if unknown:
        log.debug("ignoring unknown request keys: %s", ", ".join(sorted(unknown)))

    model = _optional(body, "model", str) or "uni-1"
    if model in UNAVAILABLE_MODELS:
        raise _bad(Detail.model_unavailable(model))
    if model not in MODELS:
        raise _bad(Detail.unknown_model(model))

    type_ = _optional(body, "type", str) or GenerationType.IMAGE.value
    if type_ not in (GenerationType.IMAGE, GenerationType.IMAGE_EDIT):
        raise _bad(Detail.type_not_supported(type_, model))
    is_edit = type_ == GenerationType.IMAGE_EDIT

    if body.get("prompt") is None:
        raise _bad(Detail.field_required("prompt"))
    prompt = _optional(body, "prompt", str)
    if not 1 <= len(prompt) <= PROMPT_MAX_CHARS:
        raise _bad(Detail.PROMPT_LENGTH)

    aspect_ratio = _optional(body, "aspect_ratio", str)
    if aspect_ratio is not None and aspect_ratio not in ASPECT_RATIOS:
        raise _bad(Detail.invalid_aspect_ratio(aspect_ratio))

    style = _optional(body, "style", str) or "auto"
    if style not in STYLES:
        raise _bad(Detail.STYLE_VALUES)
    # For image_edit the ratio is ignored (the output keeps the source's), so it cannot clash.
    if style == "manga" and not is_edit and aspect_ratio is not None and aspect_ratio not in PORTRAIT_RATIOS:
        raise _bad(Detail.MANGA_RATIO)

    output_format = _optional(body, "output_format", str)
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise _bad(Detail.OUTPUT_FORMAT_VALUES)

    web_search = _optional(body, "web_search", bool) or False

    user_id = _optional(body, "user_id", str)
    if user_id is not None and len(user_id) > USER_ID_MAX_CHARS:
        raise _bad(Detail.USER_ID_LENGTH)

    callback_url = _optional(body, "callback_url", str)
    if callback_url is not None and not (
        len(callback_url) <= CALLBACK_URL_MAX_CHARS and re.match(r"(?i)https?://[^\s/?#]+", callback_url)
    ):
        raise _bad(Detail.CALLBACK_URL_INVALID)

    source: ImageRef | None = None
    if body.get("source") is not None:
        if not is_edit:
            raise _bad(Detail.SOURCE_ONLY_FOR_EDIT)
        source = parse_image_ref(body["source"], "source")
    elif is_edit:
        raise _bad(Detail.SOURCE_REQUIRED)

    raw_refs = _optional(body, "image_ref", list) or []
    if len(raw_refs) > MAX_IMAGE_REFS[type_]:
        raise _bad(Detail.TOO_MANY_REFS_EDIT if is_edit else Detail.TOO_MANY_REFS_IMAGE)
    image_ref = [parse_image_ref(ref, f"image_ref[{i}]") for i, ref in enumerate(raw_refs)]

    return GenerationCreate.model_validate(
        {
            "prompt": prompt,
            "model": model,
            "type": type_,
            "aspect_ratio": aspect_ratio,
            "style": style,
            "output_format": output_format,
            "web_search": web_search,
            "image_ref": image_ref or None,
            "source": source,
            "user_id": user_id,
            "callback_url": callback_url,
        }
    )


def parse_image_ref(value: Any, path: str) -> ImageRef:
    """One ImageRef: exactly one of url, data, generation_id, file_id (empty strings count as unset)."""
    if not isinstance(value, dict):
        raise _bad(Detail.wrong_type(path, "object"))
    fields = {
        name: _optional(value, name, str, f"{path}.{name}") for name in (*IMAGE_REF_SOURCES, "media_type")
    }
    given = [name for name in IMAGE_REF_SOURCES if fields[name]]
    if fields["url"] and fields["data"]:
        raise _bad(Detail.ref_url_and_data(path))
    if not given:
        raise _bad(Detail.ref_none(path))
    if len(given) > 1:
        raise _bad(Detail.ref_several(path))
    if fields["data"] and not fields["media_type"]:
        raise _bad(Detail.ref_media_type_required(path))
    return ImageRef(**{name: fields[name] or None for name in fields})


def parse_file_create(body: Any, *, inline: bool = False) -> FileCreate:
    """Validate the fields of `POST /v1/files` (JSON body, or the form fields of a multipart upload,
    where `size_bytes` comes from the part and every value arrives as text)."""
    if not isinstance(body, dict):
        raise _bad(Detail.BODY_NOT_OBJECT)
    values: dict[str, Any] = {}
    if body.get("mime_type") is None:
        raise _bad(Detail.field_required("mime_type"))
    mime_type = _optional(body, "mime_type", str).strip().lower()
    mime_type = MIME_TYPE_ALIASES.get(mime_type, mime_type)
    if mime_type not in ACCEPTED_MIME_TYPES:
        raise _bad(f"mime_type: must be one of {', '.join(ACCEPTED_MIME_TYPES)}")
    values["mime_type"] = mime_type
    size = body.get("size_bytes")
    if size is None:
        raise _bad(Detail.field_required("size_bytes"))
    if inline and isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool):
        raise _bad("size_bytes: must be an integer")
    if not 1 <= size <= MAX_INPUT_IMAGE_BYTES:
        raise _bad(f"size_bytes: must be between 1 and {MAX_INPUT_IMAGE_BYTES}")
    values["size_bytes"] = size
    expires = _optional(body, "expires_at", str)
    if expires is not None:
        moment = parse_timestamp(expires, "expires_at")
        if moment <= datetime.now(UTC):
            raise _bad("expires_at: must be in the future")
        values["expires_at"] = moment
    filename = _optional(body, "filename", str)
    if filename is not None and len(filename) > FILENAME_MAX_CHARS:
        raise _bad(f"filename: must be at most {FILENAME_MAX_CHARS} characters")
    values["filename"] = filename
    purpose = _optional(body, "purpose", str) or "input"
    if purpose not in FILE_PURPOSES:
        raise _bad(f"purpose: must be one of {', '.join(FILE_PURPOSES)}")
    values["purpose"] = purpose
    user_id = _optional(body, "user_id", str)
    if user_id is not None and len(user_id) > USER_ID_MAX_CHARS:
        raise _bad(Detail.USER_ID_LENGTH)
    values["user_id"] = user_id
    return FileCreate.model_validate(values)
