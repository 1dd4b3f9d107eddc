"""Rate limits as the official SDK sees them, and the remote engine against a second daguerre."""

from __future__ import annotations

import signal
import time

import httpx
import luma_agents
import pytest

from support.cluster import run_cli, sdk
from support.helpers import scripted_models, scripted_models_each, start_server, write_models_file

BODY = {"prompt": "a red circle", "aspect_ratio": "1:1"}


def default_limits(live):
    """The first-start account (the owner's) has no limits; these tests want the defaults on it."""
    command = ["accounts", "set-limits", "local", "--rpm", "default", "--concurrency", "default"]
    result = run_cli(live, *command)
    assert result.exit_code == 0, result.output
    return live


@pytest.fixture(scope="module")
def limited(tmp_path_factory, launch):
    root = tmp_path_factory.mktemp("limited")
    live = launch(
        root,
        scripted_models(root / "models.toml"),
        workers=0,  # jobs stay queued: the concurrency test below counts on it
        DAGUERRE_DEFAULT_RPM="2",
        DAGUERRE_RATE_LIMIT_WINDOW_S="2",
    )
    yield default_limits(live)
    assert live.stop() in (0, -signal.SIGTERM), live.log()


def test_headers_on_201_and_a_429_the_sdk_raises_without_retries(limited):
    luma = sdk(limited, max_retries=0)  # on a cluster, A then B then A: one window in Redis
    time.sleep(2.1)  # a fresh window
    first = luma.generations.with_raw_response.create(prompt="a", aspect_ratio="1:1")
    second = luma.generations.with_raw_response.create(prompt="b", aspect_ratio="1:1")
    assert first.status_code == second.status_code == 201
    assert (first.headers["x-ratelimit-limit"], first.headers["x-ratelimit-remaining"]) == ("2", "1")
    assert second.headers["x-ratelimit-remaining"] == "0"
    assert int(first.headers["x-ratelimit-reset"]) >= int(time.time())
    with pytest.raises(luma_agents.RateLimitError) as refused:
        luma.generations.create(prompt="c", aspect_ratio="1:1")
    assert refused.value.status_code == 429 and refused.value.body == {"detail": "Rate limit exceeded"}
    headers = refused.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 2 and headers["x-ratelimit-remaining"] == "0"


def test_the_sdk_retry_honours_retry_after(limited):
    luma = sdk(limited)  # 2 retries, the default
    time.sleep(2.1)
    luma.generations.create(prompt="a", aspect_ratio="1:1")
    luma.generations.create(prompt="b", aspect_ratio="1:1")
    started = time.monotonic()
    third = luma.generations.create(prompt="c", aspect_ratio="1:1")  # 429, wait Retry-After, retry: 201
    assert third.state == "queued"
    assert 0.8 <= time.monotonic() - started <= 6


def test_too_many_concurrent_jobs_has_retry_after_60_and_no_rate_headers(limited, tmp_path):
    token = run_cli(limited, "keys", "create", "--account", "busy").stdout.strip().splitlines()[-1]
    assert run_cli(limited, "accounts", "set-limits", "busy", "--concurrency", "1").exit_code == 0
    luma = sdk(limited, auth_token=token, max_retries=0)
    luma.generations.create(prompt="one", aspect_ratio="1:1")
    with pytest.raises(luma_agents.RateLimitError) as refused:
        luma.generations.create(prompt="two", aspect_ratio="1:1")
    assert refused.value.body == {"detail": "Too many concurrent jobs"}
    headers = refused.value.response.headers
    assert headers["retry-after"] == "60"
    assert not any(name.lower().startswith("x-ratelimit") for name in headers)


def test_the_remote_engine_bursts_to_an_upstream_and_maps_its_failures(tmp_path):
    upstream_models = scripted_models_each(
        tmp_path / "upstream.toml",
        {"uni-1": {}, "uni-1-max": {"mode": "job_failure", "code": "unsupported_format"}},
    )
    upstream = default_limits(
        start_server(tmp_path / "upstream", upstream_models, workers=1, DAGUERRE_DEFAULT_RPM="2")
    )
    remote = {
        "engine": "remote",
        "base_url": upstream.api_url,
        "api_key_env": "UPSTREAM_KEY",
        "poll_s": 0.1,
        "max_retries": 2,
        "retry_wait_cap_s": 0.2,
    }
    gateway = start_server(
        tmp_path / "gateway",
        write_models_file(tmp_path / "gateway.toml", {"*": remote}),
        workers=1,
        UPSTREAM_KEY=upstream.key,
    )
    try:
        luma = luma_agents.Luma(auth_token=gateway.key, base_url=gateway.api_url)

        def run(**body):
            generation = luma.generations.create(**body)
            for _ in range(300):
                generation = luma.generations.get(generation.id)
                if generation.state in ("completed", "failed"):
                    return generation
                time.sleep(0.1)
            raise AssertionError("not finished")

        drawn = run(prompt="a blue star", aspect_ratio="16:9")
        assert drawn.state == "completed", (drawn.failure_code, drawn.failure_reason)
        assert httpx.get(drawn.output[0].url).status_code == 200
        failed_upstream = run(prompt="x", model="uni-1-max", aspect_ratio="1:1")
        assert (failed_upstream.state, failed_upstream.failure_code) == ("failed", "unsupported_format")
        throttled = run(prompt="a third one", aspect_ratio="1:1")  # upstream's 2 per minute are used up
        assert (throttled.state, throttled.failure_code) == ("failed", "rate_limited")
        assert "429" in throttled.failure_reason
    finally:
        gateway.stop()
        upstream.stop()
