"""Keys: the four 401 details, the two 403s, expiry, revocation, and tenancy (spec §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daguerre.store.accounts import AccountStatus, hash_key
from support.helpers import make_key

pytestmark = pytest.mark.both_databases

BODY = {"prompt": "a lighthouse"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "luma-api-abc",  # no scheme
        "bearer luma-api-abcdefghijklmnopqrstuvwxyz",  # the scheme word is case-sensitive
        "Basic dXNlcjpwYXNz",
        "Bearer sk-not-a-luma-key",
        "Bearer luma-api-",
        "Bearer ",
    ],
)
def test_missing_or_malformed_key(client, header):
    headers = {"Authorization": header} if header is not None else {}
    for response in (
        client.post("/v1/generations", json=BODY, headers=headers),
        client.get("/v1/generations/d290f1ee-6c54-4b01-90e6-d701748f0851", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json() == {"detail": "Missing or invalid API key"}


def test_well_formed_unknown_key(client):
    response = client.post(
        "/v1/generations", json=BODY, headers={"Authorization": "Bearer luma-api-" + "x" * 43}
    )
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})


def test_revoked_key(client, store, key):
    assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201
    assert store.accounts.revoke_key(key.key_id)
    response = client.post("/v1/generations", json=BODY, headers=key.headers)
    assert (response.status_code, response.json()) == (401, {"detail": "API key has been revoked"})


def test_expired_key(client, store):
    account = store.accounts.create("short-lived")
    _, token = store.accounts.create_key(account.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    response = client.get(
        "/v1/generations/d290f1ee-6c54-4b01-90e6-d701748f0851", headers={"Authorization": f"Bearer {token}"}
    )
    assert (response.status_code, response.json()) == (401, {"detail": "API key has expired"})
    _, fresh = store.accounts.create_key(account.id, expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert (
        client.post("/v1/generations", json=BODY, headers={"Authorization": f"Bearer {fresh}"}).status_code
        == 201
    )


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        (AccountStatus.SUSPENDED, "API client is suspended"),
        (AccountStatus.DEACTIVATED, "API client is deactivated"),
    ],
)
def test_suspended_and_deactivated_accounts_get_403(client, store, key, status, detail):
    store.accounts.set_status(key.account_id, status)
    response = client.post("/v1/generations", json=BODY, headers=key.headers)
    assert (response.status_code, response.json()) == (403, {"detail": detail})
    store.accounts.set_status(key.account_id, AccountStatus.ACTIVE)
    assert client.post("/v1/generations", json=BODY, headers=key.headers).status_code == 201


def test_keys_are_stored_only_as_sha256(store, key):
    from daguerre.store.schema import api_keys

    with store.db.read() as conn:
        stored = conn.execute(api_keys.select()).mappings().all()
    assert all(key.token not in str(dict(row).values()) for row in stored)
    assert hash_key(key.token) in {row["key_hash"] for row in stored}
    assert key.token.startswith("luma-api-") and len(key.token) >= len("luma-api-") + 43  # 32 random bytes


def test_keys_of_one_account_share_generations_other_accounts_get_404(client, store, key):
    created = client.post("/v1/generations", json=BODY, headers=key.headers).json()
    same_account = make_key(store, "acme")
    other_account = make_key(store, "globex")
    assert client.get(f"/v1/generations/{created['id']}", headers=same_account.headers).status_code == 200
    foreign = client.get(f"/v1/generations/{created['id']}", headers=other_account.headers)
    assert (foreign.status_code, foreign.json()) == (404, {"detail": "Generation not found"})


@pytest.mark.parametrize(
    "template", ["Bearer  {}", "Bearer   {}", "Bearer\t{}", "Bearer {} x", "Bearer {}\x7f"]
)
def test_a_real_key_in_a_malformed_header_is_refused(client, key, template):
    headers = {"Authorization": template.format(key.token)}
    response = client.get("/v1/generations/d290f1ee-6c54-4b01-90e6-d701748f0851", headers=headers)
    assert (response.status_code, response.json()) == (401, {"detail": "Missing or invalid API key"})
    exact = {"Authorization": f"Bearer {key.token}"}
    assert (
        client.get("/v1/generations/d290f1ee-6c54-4b01-90e6-d701748f0851", headers=exact).status_code == 404
    )
