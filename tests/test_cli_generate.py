"""`daguerre generate` and `daguerre generations` against a live `daguerre serve`: text-to-image,
edits of a local file and of an earlier generation, a failing job, Ctrl-C cancelling the job on the
server, --json, and the progress bar as a terminal shows it."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from support.helpers import LiveServer, scripted_models_each, start_server, subprocess_env

STEPS = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("generate")
    models = scripted_models_each(
        root / "models.toml",
        {
            "uni-1": {"steps": STEPS, "step_s": 0.05},
            "uni-1-max": {"mode": "job_failure", "code": "generation_failed"},
        },
    )
    live = start_server(root / "data", models)
    yield live
    assert live.stop() in (0, -signal.SIGTERM), live.log()


def cli(
    server: LiveServer, *args: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`daguerre ARGS` reaching the server through the SDK's variables (as a user's shell would)."""
    variables = {"LUMA_BASE_URL": server.api_url, "LUMA_AGENTS_API_KEY": server.key, **env}
    return subprocess.run(
        [sys.executable, "-m", "daguerre.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=subprocess_env(**variables),
    )


def generation(server: LiveServer, generation_id: str) -> dict:
    response = httpx.get(
        f"{server.api_url}/generations/{generation_id}", headers={"Authorization": f"Bearer {server.key}"}
    )
    return response.json()


def test_a_prompt_becomes_a_saved_image_and_its_path_is_printed(server, tmp_path):
    done = cli(server, "generate", "a red star on a white background", "--aspect-ratio", "16:9", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / done.stdout.strip()
    assert path.suffix == ".png" and path.stem == path.name.split(".")[0]
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height
    assert generation(server, path.stem)["state"] == "completed"


def test_json_prints_the_final_generation_and_jpeg_is_saved_where_asked(server, tmp_path):
    out = tmp_path / "picture.jpg"
    done = cli(server, "generate", "a blue square", "--format", "jpeg", "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["state"] == "completed" and body["type"] == "image"
    with Image.open(out) as image:
        assert image.format == "JPEG"


def test_an_edit_of_a_local_file_and_of_an_earlier_generation(server, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (96, 64), (200, 30, 30)).save(source)
    first = cli(
        server, "generate", "make it blue", "--edit", str(source), "--json", "-o", str(tmp_path / "a.png")
    )
    assert first.returncode == 0, first.stderr
    edited = json.loads(first.stdout)
    assert edited["type"] == "image_edit" and edited["state"] == "completed"
    with Image.open(tmp_path / "a.png") as image:
        assert image.width > image.height  # the source's shape is kept
    second = cli(
        server,
        "generate",
        "now green",
        "--edit",
        edited["id"],
        "--ref",
        str(source),
        "--json",
        "-o",
        str(tmp_path / "b.png"),
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["type"] == "image_edit"
    missing = cli(server, "generate", "x", "--edit", str(tmp_path / "nope.png"))
    assert missing.returncode == 1 and "not a file, an http(s) URL or a generation id" in missing.stderr


def test_a_failing_job_prints_its_failure_code_and_exits_non_zero(server, tmp_path):
    done = cli(server, "generate", "anything", "--model", "uni-1-max", cwd=tmp_path)
    assert done.returncode == 1
    assert "failed: generation_failed: scripted generation_failed" in done.stderr
    assert not list(tmp_path.iterdir())  # nothing saved
    refused = cli(server, "generate", "x", "--aspect-ratio", "5:4")
    assert refused.returncode == 1 and "HTTP 400: Invalid aspect_ratio '5:4'" in refused.stderr


def test_without_a_key_the_command_says_where_to_find_one(server, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "daguerre.cli", "generate", "x", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(LUMA_BASE_URL=server.api_url),
    )
    assert done.returncode == 2 and "no API key" in done.stderr and str(tmp_path / "api-key") in done.stderr
    # the key `daguerre serve` saved is the default
    found = subprocess.run(
        [
            sys.executable,
            "-m",
            "daguerre.cli",
            "generations",
            "list",
            "--data-dir",
            str(server.data_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(LUMA_BASE_URL=server.api_url),
    )
    assert found.returncode == 0, found.stderr
    assert isinstance(json.loads(found.stdout)["data"], list)


def run_in_terminal(
    server: LiveServer, args: list[str], cwd: Path, until: bytes | None = None
) -> tuple[int, bytes]:
    """The command with a pseudo-terminal as its stdout and stderr; with `until`, SIGINT (Ctrl-C)
    once that text has appeared. Returns (exit status, everything it wrote)."""
    controller, terminal = pty.openpty()
    env = subprocess_env(
        LUMA_BASE_URL=server.api_url, LUMA_AGENTS_API_KEY=server.key, COLUMNS="100", TERM="xterm"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "daguerre.cli", *args], stdout=terminal, stderr=terminal, cwd=cwd, env=env
    )
    os.close(terminal)
    written = b""
    deadline = time.monotonic() + 60
    interrupted = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            written += chunk
        if until is not None and not interrupted and until in written:
            process.send_signal(signal.SIGINT)
            interrupted = True
        if process.poll() is not None and not ready:
            break
    os.close(controller)
    return process.wait(timeout=30), written


def test_progress_shows_in_a_terminal(server, tmp_path):
    status, written = run_in_terminal(server, ["generate", "a green heart"], tmp_path)
    assert status == 0, written
    assert b"generating" in written and b"%" in written
    assert list(tmp_path.glob("*.png"))


def test_ctrl_c_cancels_the_job_on_the_server(server, tmp_path):
    status, written = run_in_terminal(server, ["generate", "a slow one"], tmp_path, until=b"generating")
    assert status == 130, written
    assert b"cancelled" in written
    generation_id = written.split(b"cancelled ")[1].split()[0].decode()
    body = generation(server, generation_id)
    assert (body["state"], body["failure_reason"]) == ("failed", "Cancelled by request")
    assert not list(tmp_path.glob("*.png"))


def test_generations_list_get_and_cancel(server):
    listed = cli(server, "generations", "list", "--limit", "3")
    assert listed.returncode == 0, listed.stderr
    assert "completed" in listed.stdout and "id" in listed.stdout
    failed = cli(server, "generations", "list", "--state", "failed", "--json")
    assert {g["state"] for g in json.loads(failed.stdout)["data"]} == {"failed"}
    newest = json.loads(cli(server, "generations", "list", "--limit", "1", "--json").stdout)["data"][0]
    got = cli(server, "generations", "get", newest["id"])
    assert json.loads(got.stdout)["id"] == newest["id"]
    finished = cli(server, "generations", "cancel", newest["id"])
    assert finished.returncode == 0 and newest["id"] in finished.stdout
    unknown = cli(server, "generations", "get", "00000000-0000-4000-8000-000000000000")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
