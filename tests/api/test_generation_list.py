"""GET /v1/generations (daguerre extension): the caller's generations newest first, a keyset cursor
stable while new ones arrive, filters, fresh output URLs, purged ones left out, bad parameters 400."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from support.helpers import make_key

pytestmark = pytest.mark.both_databases


def create(client, auth, **body):
    response = client.post("/v1/generations", json={"prompt": "a cat", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def listed(client, auth, **params):
    response = client.get("/v1/generations", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def test_pages_through_250_generations_newest_first_while_new_ones_arrive(client, auth):
    earlier = [create(client, auth, prompt=f"job {n}") for n in range(250)]
    seen: list[str] = []
    later: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = listed(client, auth, limit=40, **({"cursor": cursor} if cursor else {}))
        pages += 1
        seen += [item["id"] for item in page["data"]]
        later += [create(client, auth, prompt=f"new {pages} {n}") for n in range(3)]  # while paging
        assert page["has_more"] == (page["next_cursor"] is not None)
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(earlier))  # each exactly once, newest first; none of the new ones
    assert pages == 7
    assert [item["id"] for item in listed(client, auth, limit=3)["data"]] == list(reversed(later))[:3]


def test_the_default_page_is_25_and_items_are_luma_generations(client, auth):
    for n in range(30):
        create(client, auth, prompt=f"job {n}")
    page = listed(client, auth)
    assert len(page["data"]) == 25 and page["has_more"] is True
    item = page["data"][0]
    assert set(item) == {
        "id",
        "type",
        "state",
        "model",
        "created_at",
        "output",
        "failure_code",
        "failure_reason",
    }
    assert (item["state"], item["output"], item["failure_code"]) == ("queued", [], None)


def test_filters_by_state_model_type_and_user(client, auth, worker):
    done = create(client, auth, model="uni-1-max", user_id="ana")
    assert worker.run_once() is not None  # the oldest: `done` completes
    queued_max = create(client, auth, model="uni-1-max")
    plain = create(client, auth, user_id="ana")
    edit = create(
        client, auth, type="image_edit", source={"generation_id": done}, prompt="blue", user_id="bo"
    )

    def ids(**params):
        return [item["id"] for item in listed(client, auth, **params)["data"]]

    assert ids() == [edit, plain, queued_max, done]
    assert ids(state="completed") == [done]
    assert ids(state="queued") == [edit, plain, queued_max]
    assert ids(model="uni-1-max") == [queued_max, done]
    assert ids(type="image_edit") == [edit]
    assert ids(user_id="ana") == [plain, done]
    assert ids(user_id="ana", model="uni-1") == [plain]
    assert ids(state="failed") == []
    (completed,) = listed(client, auth, state="completed")["data"]
    image = client.get(completed["output"][0]["url"])  # a freshly presigned URL, as GET gives
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_only_the_caller_s_generations_are_listed(client, store, auth):
    mine = create(client, auth)
    other = make_key(store, "someone-else")
    theirs = create(client, other.headers)
    assert [item["id"] for item in listed(client, auth)["data"]] == [mine]
    assert [item["id"] for item in listed(client, other.headers)["data"]] == [theirs]
    assert client.get("/v1/generations").status_code == 401


def test_purged_generations_are_left_out(client, store, auth, worker):
    kept, purged = create(client, auth), create(client, auth)
    worker.run_once(), worker.run_once()
    assert store.generations.mark_purged([purged], datetime.now(UTC)) == {purged}
    assert [item["id"] for item in listed(client, auth)["data"]] == [kept]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit: must be between 1 and 100"),
        ("limit=101", "limit: must be between 1 and 100"),
        ("limit=ten", "limit: Input should be a valid integer, unable to parse string as an integer"),
        ("state=done", "state: must be one of queued, processing, completed, failed"),
        ("model=uni-2", "model: must be one of uni-1, uni-1-max"),
        ("type=video", "type: must be one of image, image_edit"),
        ("user_id=" + "u" * 257, "user_id: must be 1 to 256 characters"),
        ("cursor=!!!", "cursor: invalid"),
        ("cursor=MjAyNi0wMS0wMVQwMDowMDowMHxhYmM", "cursor: invalid"),  # a naive timestamp
    ],
)
def test_bad_parameters_are_400_with_a_string_detail(client, auth, query, detail):
    response = client.get(f"/v1/generations?{query}", headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_the_list_is_in_the_openapi_document(client):
    operation = client.get("/openapi.json").json()["paths"]["/v1/generations"]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {
        "limit",
        "cursor",
        "state",
        "model",
        "type",
        "user_id",
    }
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GenerationList"
    }
