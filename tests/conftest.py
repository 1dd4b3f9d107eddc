"""Shared fixtures: a temporary data directory with the real SQLite store and local blobs, the app
in-process, keys, workers, a tiny diffusers pipeline built offline, a live `daguerre serve`, and a
real S3 service (SeaweedFS) with an S3 blob store on it. Modules marked both_databases run their
tests on a PostgreSQL store too (a throwaway server, a database per test)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from daguerre.api import create_app
from daguerre.blobs import LocalBlobStore, S3BlobStore, open_blob_store
from daguerre.settings import Settings
from daguerre.store import Store, open_store
from daguerre.worker import Worker
from support.cluster import ClusterServices
from support.helpers import Key, RedisServer, make_key, make_worker, scripted_models
from support.seaweed import REGION, SeaweedFS
from support.temporal import TemporalServer


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see none of the developer's DAGUERRE_* / LUMA_* / AWS_* settings (nor AWS config
    files), and never reach the Hub or a cloud's metadata service."""
    for name in list(os.environ):
        if name.startswith(("DAGUERRE_", "LUMA_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DAGUERRE_MODERATION", "0")  # see the settings fixture; moderation tests turn it on


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    return scripted_models(tmp_path / "models.toml")


BOTH_DATABASES = "both_databases"
"""A marker (`pytestmark = pytest.mark.both_databases`): the module's tests run once with the store
on SQLite and once on PostgreSQL (test ids end in [sqlite] / [postgresql])."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{BOTH_DATABASES}: run the tests on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker(BOTH_DATABASES):
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """The store's database: `sqlite`, or `postgresql` in the second run of a both_databases test."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_url(database: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The settings' database_url: None (the SQLite file in the data directory), or a database of
    the test's own on the shared PostgreSQL server, already migrated, dropped afterwards."""
    if database == "sqlite":
        yield None
        return
    from support.postgres import drop_database, migrated_database

    url = migrated_database(request.getfixturevalue("postgres_template"))
    yield url
    drop_database(url)


@pytest.fixture
def settings(tmp_path: Path, models_file: Path, store_url: str | None) -> Settings:
    # Generous limits: tests of the limits themselves set their own. Moderation (on in the product)
    # is switched on by the tests about it, so the others need not load its models.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=store_url,
        models_file=models_file,
        workers=0,
        lease_s=30,
        default_rpm=100_000,
        default_concurrency=100_000,
        moderation=False,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings.resolved_database_url)
    yield store
    store.close()


@pytest.fixture
def blobs(settings: Settings) -> LocalBlobStore:
    blobs = open_blob_store(settings)
    assert isinstance(blobs, LocalBlobStore)
    return blobs


@pytest.fixture
def client(settings: Settings, store: Store, blobs: LocalBlobStore) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store, blobs), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def key(store: Store) -> Key:
    return make_key(store)


@pytest.fixture
def auth(key: Key) -> dict[str, str]:
    return key.headers


@pytest.fixture
def worker(settings: Settings, store: Store, blobs: LocalBlobStore) -> Worker:
    return make_worker(settings, store, blobs)


# A real S3 service, started once per test run (about a second) ------------------------------------


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS.start(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_blobs(seaweedfs: SeaweedFS) -> S3BlobStore:
    """An S3 store in the SeaweedFS bucket, under a key prefix of its own: tests share the bucket
    but never see each other's blobs."""
    return S3BlobStore(
        seaweedfs.bucket,
        f"test-{uuid.uuid4().hex[:12]}/",
        endpoint_url=seaweedfs.endpoint,
        region_name=REGION,
        credentials=seaweedfs.credentials,
    )


# A tiny Stable Diffusion pipeline, built once per test run, loaded through the real adapter ------


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from support.tiny import save_tiny_sd_pipeline

    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def klein_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from support.tiny import save_tiny_flux2_klein_pipeline

    return save_tiny_flux2_klein_pipeline(tmp_path_factory.mktemp("klein") / "pipeline")


@pytest.fixture(scope="session")
def pix2pix_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from support.tiny import save_tiny_pix2pix_pipeline

    return save_tiny_pix2pix_pipeline(tmp_path_factory.mktemp("pix2pix") / "pipeline")


@pytest.fixture(scope="session")
def shape_classifier(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The evaluator's shape classifier, trained on the generator at test time (about 30 s)."""
    from daguerre.engine.builtin.evaluate import ShapeClassifier

    return ShapeClassifier.train()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL 15 server for the whole run (started on first use); tests take a database of
    their own on it (support.postgres: fresh_database, or migrated_database through store_url)."""
    from support.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> str:
    """postgres_url, with a template database at the newest revision for migrated_database."""
    from support.postgres import make_template

    make_template(postgres_url)
    return postgres_url


# The servers of the cluster profile: Temporal and Redis once per run, beside PostgreSQL and S3 ----


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """A Temporal dev server (fairness on, one partition per task queue); tests use task queues of
    their own."""
    server = TemporalServer.start(tmp_path_factory.mktemp("temporal"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_services(
    postgres_template: str, seaweedfs: SeaweedFS, redis_server: RedisServer, temporal_server: TemporalServer
) -> ClusterServices:
    """Everything the cluster profile shares; each Cluster takes a database, a key prefix and task
    queues of its own (support.cluster)."""
    return ClusterServices(postgres_template, seaweedfs, redis_server, temporal_server)
