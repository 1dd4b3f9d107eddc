"""Prices, balances, holds and the ledger; spending caps; concurrency and per-minute limits; usage."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from daguerre import pricing
from daguerre.api import create_app
from daguerre.settings import Settings
from daguerre.store.schema import accounts, ledger
from daguerre.wire import FailureCode, State
from support.helpers import make_worker, scripted_models

pytestmark = pytest.mark.both_databases

BODY = {"prompt": "a red circle", "aspect_ratio": "1:1"}


def test_prices_reproduce_lumas_table():
    settings = Settings()
    table = {
        ("uni-1", 0): 40_400,
        ("uni-1", 1): 43_400,
        ("uni-1", 2): 46_400,
        ("uni-1", 9): 67_400,
        ("uni-1-max", 0): 100_000,
        ("uni-1-max", 1): 103_000,
        ("uni-1-max", 5): 115_000,
        ("uni-1-max", 9): 127_000,
    }
    for (model, inputs), micro in table.items():
        assert pricing.price(settings, model, inputs) == micro
    assert pricing.micro_dollars("12.50") == 12_500_000 and pricing.dollars(40_400) == "$0.0404"


@pytest.fixture
def metered(store):
    """A metered account holding exactly enough for `n` uni-1 images, and its key headers."""

    def make(n: int, name: str = "metered"):
        account = store.accounts.create(name, balance=40_400 * n)
        _, token = store.accounts.create_key(account.id)
        return account, {"Authorization": f"Bearer {token}"}

    return make


def money(store, account_id):
    account = store.accounts.get(account_id)
    return account.balance, account.reserved


def ledger_rows(store, generation_id):
    with store.db.read() as conn:
        rows = conn.execute(
            sa.select(ledger.c.kind, ledger.c.amount).where(ledger.c.generation_id == generation_id)
        )
        return {row.kind: row.amount for row in rows}


def test_a_create_holds_the_price_and_completion_captures_it(client, store, worker, metered):
    account, auth = metered(3)
    generation_id = client.post("/v1/generations", json=BODY, headers=auth).json()["id"]
    assert money(store, account.id) == (121_200, 40_400)
    assert worker.run_once().state == State.COMPLETED
    assert money(store, account.id) == (80_800, 0)
    assert ledger_rows(store, generation_id) == {"reserve": 40_400, "capture": 40_400}


def test_edits_and_references_cost_more(client, store, metered):
    _account, auth = metered(10)
    import base64

    from support.imageserver import png_bytes

    image = {"data": base64.b64encode(png_bytes()).decode(), "media_type": "image/png"}
    body = {"prompt": "x", "type": "image_edit", "source": image, "image_ref": [image, image]}
    generation_id = client.post("/v1/generations", json=body, headers=auth).json()["id"]
    assert ledger_rows(store, generation_id) == {"reserve": 49_400}  # base + 3 inputs


@pytest.mark.parametrize(
    ("mode", "code"), [("raise", FailureCode.GENERATION_FAILED), ("job_failure", FailureCode.CORRUPT_INPUT)]
)
def test_failures_are_refunded(client, store, tmp_path, blobs, metered, mode, code):
    account, auth = metered(1)
    generation_id = client.post("/v1/generations", json=BODY, headers=auth).json()["id"]
    worker = make_worker(
        Settings(
            data_dir=tmp_path / "data",
            models_file=scripted_models(tmp_path / "m.toml", mode=mode, code=code.value),
        ),
        store,
        blobs,
    )
    assert worker.run_once().failure_code == code
    assert money(store, account.id) == (40_400, 0)
    assert ledger_rows(store, generation_id) == {"reserve": 40_400, "release": 40_400}


def test_insufficient_balance_is_402_and_queues_nothing(client, store, metered):
    account, auth = metered(1)
    assert client.post("/v1/generations", json=BODY, headers=auth).status_code == 201
    refused = client.post("/v1/generations", json=BODY, headers=auth)
    assert (refused.status_code, refused.json()) == (
        402,
        {"detail": "Insufficient balance. Please add funds to continue."},
    )
    assert store.generations.count_active(account.id, up_to=10) == 1
    assert money(store, account.id) == (40_400, 40_400)


def test_unmetered_accounts_are_never_charged(client, store, worker, auth, key):
    generation_id = client.post("/v1/generations", json=BODY, headers=auth).json()["id"]
    worker.run_once()
    assert ledger_rows(store, generation_id) == {}
    assert store.generations.get(generation_id).price == 40_400  # priced, not charged


def test_forty_parallel_creates_against_a_balance_for_ten(tmp_path, store, blobs, metered):
    account, auth = metered(10)
    settings = Settings(data_dir=tmp_path / "data", default_rpm=1000, default_concurrency=1000)
    app = create_app(settings, store, blobs)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await asyncio.gather(
                *(client.post("/v1/generations", json=BODY, headers=auth) for _ in range(40))
            )

    statuses = [r.status_code for r in asyncio.run(burst())]
    assert statuses.count(201) == 10 and statuses.count(402) == 30
    assert money(store, account.id) == (404_000, 404_000)

    # Workers that fail at random, and jobs retried: the ledger still adds up.
    rng = random.Random(4)
    completed = 0
    for _ in range(40):
        mode = rng.choice(["ok", "ok", "raise", "transient"])
        worker = make_worker(
            Settings(
                data_dir=tmp_path / "data", models_file=scripted_models(tmp_path / f"{mode}.toml", mode=mode)
            ),
            store,
            blobs,
        )
        outcome = worker.run_once()
        if outcome is None:
            break
        completed += outcome.state == State.COMPLETED
    with store.db.read() as conn:
        kinds = conn.execute(
            sa.select(ledger.c.kind, sa.func.sum(ledger.c.amount), sa.func.count()).group_by(ledger.c.kind)
        ).all()
    totals = {kind: (int(amount), count) for kind, amount, count in kinds}
    assert totals["reserve"] == (404_000, 10)
    assert totals.get("capture", (0, 0)) == (40_400 * completed, completed)
    assert (
        totals.get("capture", (0, 0))[1] + totals.get("release", (0, 0))[1] == 10
    )  # each settled exactly once
    assert money(store, account.id) == (404_000 - 40_400 * completed, 0)


def test_a_spending_cap_reached_while_the_job_waited_is_budget_exhausted(client, store, worker, metered):
    account, auth = metered(10)
    store.accounts.set_limits(account.id, spend_cap=2 * 40_400)
    ids = [client.post("/v1/generations", json=BODY, headers=auth).json()["id"] for _ in range(3)]
    outcomes = [worker.run_once() for _ in ids]
    assert [o.state for o in outcomes] == [State.COMPLETED, State.COMPLETED, State.FAILED]
    body = client.get(f"/v1/generations/{ids[2]}", headers=auth).json()
    assert (body["failure_code"], body["failure_reason"]) == (
        "budget_exhausted",
        "Insufficient credits to complete this generation.",
    )
    assert ledger_rows(store, ids[2]) == {"reserve": 40_400, "capture": 0}  # nothing done, nothing charged
    assert money(store, account.id) == (404_000 - 2 * 40_400, 0)
    assert store.accounts.spent_this_month(account.id) == 2 * 40_400


def test_a_cap_lowered_by_an_admin_applies_to_waiting_jobs(client, store, worker, metered):
    account, auth = metered(5)
    generation_id = client.post("/v1/generations", json=BODY, headers=auth).json()["id"]
    store.accounts.set_limits(account.id, spend_cap=1000)
    assert worker.run_once().failure_code == FailureCode.BUDGET_EXHAUSTED
    assert (
        client.get(f"/v1/generations/{generation_id}", headers=auth).json()["failure_code"]
        == "budget_exhausted"
    )


def test_the_concurrency_limit(tmp_path, store, blobs, key, worker):
    settings = Settings(data_dir=tmp_path / "data", default_rpm=1000, default_concurrency=2)
    with TestClient(create_app(settings, store, blobs)) as client:
        for _ in range(2):
            assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
        refused = client.post("/v1/generations", json=BODY, headers=key.headers)
        assert (refused.status_code, refused.json()) == (429, {"detail": "Too many concurrent jobs"})
        assert refused.headers["retry-after"] == "60"
        assert not any(name.lower().startswith("x-ratelimit") for name in refused.headers)
        worker.run_once()
        assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
        store.accounts.set_limits(key.account_id, concurrency_limit=5)  # a per-account limit wins
        assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201


def test_requests_per_minute(tmp_path, store, blobs, key):
    settings = Settings(data_dir=tmp_path / "data", default_rpm=3, default_concurrency=100)
    with TestClient(create_app(settings, store, blobs)) as client:
        for expected_remaining in (2, 1, 0):
            created = client.post("/v1/generations", json=BODY, headers=key.headers)
            assert created.status_code == 201
            assert created.headers["x-ratelimit-limit"] == "3"
            assert created.headers["x-ratelimit-remaining"] == str(expected_remaining)
            assert abs(int(created.headers["x-ratelimit-reset"]) - (time.time() + 60)) <= 2
        for _ in range(3):  # GETs are not counted
            client.get(f"/v1/generations/{created.json()['id']}", headers=key.headers)
        refused = client.post("/v1/generations", json=BODY, headers=key.headers)
        assert (refused.status_code, refused.json()) == (429, {"detail": "Rate limit exceeded"})
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining"] == "0" and refused.headers["x-ratelimit-limit"] == "3"
        store.accounts.set_limits(key.account_id, rpm_limit=4)  # the account's own limit
        assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201


def test_the_window_slides(tmp_path, store, blobs, key):
    settings = Settings(data_dir=tmp_path / "data", default_rpm=2, rate_limit_window_s=2)
    with TestClient(create_app(settings, store, blobs)) as client:
        assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
        time.sleep(1.0)
        assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
        refused = client.post("/v1/generations", json=BODY, headers=key.headers)
        assert (
            refused.status_code == 429 and refused.headers["retry-after"] == "1"
        )  # the first ages out first
        time.sleep(1.2)
        assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201


def test_usage_by_model_user_and_day(client, store, worker, metered):
    _account, auth = metered(10)
    for model, user in (("uni-1", "alice"), ("uni-1", "bob"), ("uni-1-max", "alice")):
        client.post("/v1/generations", json={**BODY, "model": model, "user_id": user}, headers=auth)
    worker.run_once()
    worker.run_once()
    by_model = client.get("/v1/usage?group_by=model", headers=auth).json()
    groups = {g["group"]: g for g in by_model["data"]}
    assert groups["uni-1"]["generations"] == {
        "total": 2,
        "queued": 0,
        "processing": 0,
        "completed": 2,
        "failed": 0,
    }
    assert groups["uni-1"]["spend_micro_usd"] == 80_800
    assert groups["uni-1-max"]["generations"]["queued"] == 1 and groups["uni-1-max"]["spend_micro_usd"] == 0
    assert by_model["total"]["generations"]["total"] == 3 and by_model["total"]["spend_micro_usd"] == 80_800
    by_user = {
        g["group"]: g["generations"]["total"]
        for g in client.get("/v1/usage?group_by=user_id", headers=auth).json()["data"]
    }
    assert by_user == {"alice": 2, "bob": 1}
    by_day = client.get("/v1/usage?group_by=day", headers=auth).json()["data"]
    assert len(by_day) == 1 and len(by_day[0]["group"]) == 10
    empty = client.get("/v1/usage?from=2020-01-01&to=2020-02-01", headers=auth).json()
    assert empty["data"] == [] and empty["from"] == "2020-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("group_by=color", "group_by: must be one of model, user_id, day"),
        ("from=yesterday", "from: must be an ISO-8601 date or datetime"),
        ("from=2026-02-01&to=2026-01-01", "to: must be after from"),
        ("from=2020-01-01&to=2026-01-01", "to: the range may span at most 366 days"),
    ],
)
def test_usage_validation(client, auth, query, detail):
    response = client.get(f"/v1/usage?{query}", headers=auth)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_holds_can_never_go_negative(store, metered):
    account, _ = metered(1)
    with pytest.raises(sa.exc.IntegrityError), store.db.write() as conn:
        conn.execute(accounts.update().where(accounts.c.id == account.id).values(reserved=-1))
