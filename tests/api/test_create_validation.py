"""Every documented 400 of POST /v1/generations, with its exact detail string (spec §4, §8.2, §19)."""

from __future__ import annotations

import json

import pytest

VALID_RATIOS = "1:1, 1:2, 1:3, 16:9, 2:1, 2:3, 3:1, 3:2, 9:16"
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def post(client, auth, body):
    return client.post("/v1/generations", headers=auth, json=body)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ([], "Request body must be a JSON object"),
        ("a string", "Request body must be a JSON object"),
        ({}, "prompt: field required"),
        ({"prompt": None}, "prompt: field required"),
        ({"prompt": ""}, "Prompt must be between 1 and 6000 characters"),
        ({"prompt": "x" * 6001}, "Prompt must be between 1 and 6000 characters"),
        ({"prompt": 5}, "prompt: must be a string"),
        ({"prompt": "hi", "model": "uni-2"}, "Unknown model: uni-2"),
        ({"prompt": "hi", "model": "ray-3.2"}, "Model 'ray-3.2' is not available on this server"),
        ({"prompt": "hi", "model": 1}, "model: must be a string"),
        ({"prompt": "hi", "type": "video"}, "Type 'video' is not supported for model 'uni-1'"),
        ({"prompt": "hi", "type": "video_edit"}, "Type 'video_edit' is not supported for model 'uni-1'"),
        (
            {"prompt": "hi", "type": "video_reframe", "model": "uni-1-max"},
            "Type 'video_reframe' is not supported for model 'uni-1-max'",
        ),
        ({"prompt": "hi", "type": "layering"}, "Type 'layering' is not supported for model 'uni-1'"),
        ({"prompt": "hi", "type": True}, "type: must be a string"),
        ({"prompt": "hi", "aspect_ratio": "4:3"}, f"Invalid aspect_ratio '4:3'. Valid: {VALID_RATIOS}"),
        ({"prompt": "hi", "aspect_ratio": "21:9"}, f"Invalid aspect_ratio '21:9'. Valid: {VALID_RATIOS}"),
        ({"prompt": "hi", "aspect_ratio": 1}, "aspect_ratio: must be a string"),
        ({"prompt": "hi", "style": "anime"}, "style: must be one of auto, manga"),
        (
            {"prompt": "hi", "style": "manga", "aspect_ratio": "16:9"},
            "style: 'manga' requires aspect_ratio 2:3, 9:16, 1:2 or 1:3",
        ),
        (
            {"prompt": "hi", "style": "manga", "aspect_ratio": "1:1"},
            "style: 'manga' requires aspect_ratio 2:3, 9:16, 1:2 or 1:3",
        ),
        ({"prompt": "hi", "output_format": "webp"}, "output_format: must be one of png, jpeg"),
        ({"prompt": "hi", "web_search": "yes"}, "web_search: must be a boolean"),
        ({"prompt": "hi", "web_search": 1}, "web_search: must be a boolean"),
        ({"prompt": "hi", "user_id": "u" * 257}, "user_id: must be at most 256 characters"),
        ({"prompt": "hi", "user_id": 7}, "user_id: must be a string"),
        ({"prompt": "hi", "type": "image_edit"}, "source is required for type 'image_edit'"),
        ({"prompt": "hi", "type": "image_edit", "source": None}, "source is required for type 'image_edit'"),
        (
            {"prompt": "hi", "source": {"url": "https://x/y.png"}},
            "source is only valid for type 'image_edit'",
        ),
        ({"prompt": "hi", "image_ref": {"url": "https://x/y.png"}}, "image_ref: must be an array"),
        (
            {"prompt": "hi", "image_ref": [{"url": "https://x/y.png"}] * 10},
            "image supports up to 9 reference images",
        ),
        (
            {
                "prompt": "hi",
                "type": "image_edit",
                "source": {"url": "https://x/s.png"},
                "image_ref": [{"url": "https://x/y.png"}] * 9,
            },
            "image_edit supports up to 8 reference images (source occupies one slot)",
        ),
        ({"prompt": "hi", "image_ref": ["https://x/y.png"]}, "image_ref[0]: must be an object"),
        (
            {
                "prompt": "hi",
                "image_ref": [{"url": "https://x/y.png", "data": PNG_B64, "media_type": "image/png"}],
            },
            "image_ref[0]: provide either 'url' or 'data', not both",
        ),
        (
            {"prompt": "hi", "image_ref": [{"media_type": "image/png"}]},
            "image_ref[0]: provide either 'url' or 'data', not neither",
        ),
        (
            {"prompt": "hi", "image_ref": [{"url": ""}]},
            "image_ref[0]: provide either 'url' or 'data', not neither",
        ),
        (
            {
                "prompt": "hi",
                "image_ref": [{"url": "https://x/y.png"}, {"url": "https://x/y.png", "file_id": "f"}],
            },
            "image_ref[1]: provide exactly one of 'url', 'data', 'generation_id', 'file_id'",
        ),
        (
            {"prompt": "hi", "type": "image_edit", "source": {"generation_id": "a", "file_id": "b"}},
            "source: provide exactly one of 'url', 'data', 'generation_id', 'file_id'",
        ),
        (
            {"prompt": "hi", "type": "image_edit", "source": {"data": PNG_B64}},
            "source: 'media_type' is required with 'data'",
        ),
        ({"prompt": "hi", "type": "image_edit", "source": {"url": 5}}, "source.url: must be a string"),
        ({"prompt": "hi", "type": "image_edit", "source": "https://x/y.png"}, "source: must be an object"),
    ],
)
def test_documented_400s(client, auth, body, detail):
    response = post(client, auth, body)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": detail}


def test_model_is_checked_before_type_and_type_before_the_rest(client, auth):
    body = {"model": "nope", "type": "video", "prompt": "", "aspect_ratio": "4:3"}
    assert post(client, auth, body).json()["detail"] == "Unknown model: nope"
    body["model"] = "uni-1"
    assert post(client, auth, body).json()["detail"] == "Type 'video' is not supported for model 'uni-1'"
    body["type"] = "image"
    assert post(client, auth, body).json()["detail"] == "Prompt must be between 1 and 6000 characters"


def test_prompt_limits_are_inclusive_and_count_characters(client, auth):
    assert post(client, auth, {"prompt": "x"}).status_code == 201
    assert post(client, auth, {"prompt": "é" * 6000}).status_code == 201  # 12000 bytes, 6000 characters


def test_null_is_accepted_for_every_optional_field(client, auth):
    body = {
        "prompt": "a lighthouse",
        "model": None,
        "type": None,
        "aspect_ratio": None,
        "style": None,
        "output_format": None,
        "web_search": None,
        "image_ref": None,
        "source": None,
        "user_id": None,
        "video": None,
        "layering": None,
    }
    response = post(client, auth, body)
    assert response.status_code == 201, response.text
    assert response.json()["model"] == "uni-1"
    assert response.json()["type"] == "image"


def test_unknown_keys_and_other_types_options_are_ignored(client, auth):
    body = {"prompt": "a lighthouse", "seed": 3, "n": 4, "video": {"duration": "5s"}, "layering": {"x": 1}}
    assert post(client, auth, body).status_code == 201


def test_manga_is_allowed_with_portrait_and_null_ratios(client, auth):
    for ratio in ("2:3", "9:16", "1:2", "1:3", None):
        assert (
            post(client, auth, {"prompt": "hi", "style": "manga", "aspect_ratio": ratio}).status_code == 201
        )


def test_every_valid_ratio_and_format_is_accepted(client, auth):
    for ratio in ("3:1", "2:1", "16:9", "3:2", "1:1", "2:3", "9:16", "1:2", "1:3"):
        for fmt in ("png", "jpeg"):
            body = {"prompt": "hi", "aspect_ratio": ratio, "output_format": fmt, "model": "uni-1-max"}
            response = post(client, auth, body)
            assert response.status_code == 201, (ratio, fmt, response.text)


def test_malformed_json_is_400_with_a_string_detail(client, auth):
    response = client.post(
        "/v1/generations", headers={**auth, "content-type": "application/json"}, content=b'{"prompt": "hi"'
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is not valid JSON"}
    empty = client.post("/v1/generations", headers={**auth, "content-type": "application/json"}, content=b"")
    assert empty.status_code == 400
    assert isinstance(empty.json()["detail"], str)


def test_non_ascii_bodies_sent_unescaped_are_accepted(client, auth):
    body = json.dumps({"prompt": "un chat sur un toit à Montréal, 夕焼け"}, ensure_ascii=False).encode()
    response = client.post(
        "/v1/generations", headers={**auth, "content-type": "application/json"}, content=body
    )
    assert response.status_code == 201


def test_data_ref_errors_are_422_and_413(client, auth):
    bad = {"prompt": "hi", "image_ref": [{"data": "not base64 at all!!", "media_type": "image/png"}]}
    response = post(client, auth, bad)
    assert (response.status_code, response.json()) == (422, {"detail": "image_ref[0]: invalid base64 data"})

    not_image = {"prompt": "hi", "image_ref": [{"data": PNG_B64, "media_type": "text/html"}]}
    response = post(client, auth, not_image)
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "image_ref[0]: content-type is not an image"},
    )


def test_an_image_over_50_mb_is_413(client, auth):
    import base64

    huge = base64.b64encode(b"\0" * (50 * 1024 * 1024 + 1)).decode()
    response = post(client, auth, {"prompt": "hi", "image_ref": [{"data": huge, "media_type": "image/png"}]})
    assert response.status_code == 413
    assert response.json() == {"detail": "image_ref[0]: image exceeds 50 MB limit"}


def test_data_url_prefix_is_stripped(client, auth):
    body = {
        "prompt": "hi",
        "image_ref": [{"data": "data:image/png;base64," + PNG_B64, "media_type": "image/png"}],
    }
    assert post(client, auth, body).status_code == 201
