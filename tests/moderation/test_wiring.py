"""Where moderation sits: the prompt, `source`, each `image_ref`, the output (never stored when flagged)
and Files ingest, through the checker interface with controlled results (the project ships no
explicit images). A hit fails the generation with content_moderated and releases the hold."""

from __future__ import annotations

import base64
import dataclasses
import logging

import pytest
from PIL import Image

from daguerre.moderation import ModerationUnavailable, Moderator, Verdict
from daguerre.moderation.image import NudeNetChecker
from daguerre.settings import Settings
from daguerre.wire import FailureCode, Reason, State
from support.engines import prompt_colour
from support.helpers import make_worker
from support.imageserver import png_bytes

FLAGGED_PROMPT = "FORBIDDEN words"
FLAGGED_OUTPUT_PROMPT = "a picture the image checker will flag"
FLAGGED_COLOUR = (250, 1, 1)  # inputs of this colour are flagged


class KeywordText:
    def check(self, text: str) -> Verdict | None:
        return Verdict("sexual", 0.9, "phrase") if "FORBIDDEN" in text else None

    def warm(self) -> None:
        pass


class ColourImages:
    """Flags an image whose top-left pixel has one of the given colours."""

    def __init__(self, *colours: tuple[int, int, int]) -> None:
        self.colours = set(colours)
        self.seen = 0

    def check(self, image: Image.Image) -> Verdict | None:
        self.seen += 1
        pixel = image.convert("RGB").getpixel((0, 0))
        return Verdict("sexual", 0.8, "detector:TEST") if pixel in self.colours else None

    def warm(self) -> None:
        pass


def controlled(stages=("prompt", "inputs", "output", "files")) -> Moderator:
    images = ColourImages(FLAGGED_COLOUR, prompt_colour(FLAGGED_OUTPUT_PROMPT))
    return Moderator(KeywordText(), images, stages)


@pytest.fixture
def moderated_worker(settings, store, blobs):
    worker = make_worker(settings, store, blobs)
    worker.moderator = controlled()
    return worker


def png_data(colour) -> dict[str, str]:
    return {"data": base64.b64encode(png_bytes((32, 32), colour)).decode(), "media_type": "image/png"}


def create(client, auth, **body) -> str:
    response = client.post("/v1/generations", json={"prompt": "a cat", **body}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def outputs_on_disk(settings) -> list[str]:
    root = settings.resolved_blob_dir / "outputs"
    return [str(path) for path in root.rglob("*") if path.is_file()] if root.exists() else []


@pytest.fixture
def metered(store):
    account = store.accounts.create("metered", balance=1_000_000)
    _, token = store.accounts.create_key(account.id)
    return account, {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"prompt": FLAGGED_PROMPT}, Reason.INPUT_MODERATED),
        ({"type": "image_edit", "source": png_data(FLAGGED_COLOUR)}, Reason.INPUT_MODERATED),
        ({"image_ref": [png_data((0, 0, 250)), png_data(FLAGGED_COLOUR)]}, Reason.INPUT_MODERATED),
        ({"prompt": FLAGGED_OUTPUT_PROMPT}, Reason.OUTPUT_MODERATED),
    ],
    ids=["prompt", "source", "second-image-ref", "output"],
)
def test_a_hit_fails_with_content_moderated_refunds_and_stores_no_output(
    client, store, settings, moderated_worker, metered, body, reason
):
    account, auth = metered
    generation_id = create(client, auth, **body)
    assert store.accounts.get(account.id).reserved > 0
    outcome = moderated_worker.run_once()
    assert (outcome.state, outcome.failure_code) == (State.FAILED, FailureCode.CONTENT_MODERATED)
    generation = client.get(f"/v1/generations/{generation_id}", headers=auth).json()
    assert generation["state"] == "failed"
    assert generation["failure_code"] == "content_moderated"
    assert generation["failure_reason"] == reason
    assert generation["output"] in (None, [])
    assert store.accounts.get(account.id).balance == 1_000_000  # refunded
    assert store.accounts.get(account.id).reserved == 0
    assert outputs_on_disk(settings) == []


def test_benign_inputs_and_outputs_complete_after_every_image_was_checked(client, auth, moderated_worker):
    create(client, auth, type="image_edit", source=png_data((0, 250, 0)), image_ref=[png_data((0, 0, 250))])
    assert moderated_worker.run_once().state == State.COMPLETED
    assert moderated_worker.moderator.image.seen == 3  # source, reference, output


def test_stages_that_are_off_are_skipped(client, auth, moderated_worker):
    moderated_worker.moderator = controlled(stages=("prompt",))
    create(client, auth, prompt=FLAGGED_OUTPUT_PROMPT)
    assert moderated_worker.run_once().state == State.COMPLETED
    create(client, auth, prompt=FLAGGED_PROMPT)
    assert moderated_worker.run_once().failure_code == FailureCode.CONTENT_MODERATED


def test_the_worker_logs_the_decision_with_its_score_not_the_prompt(client, auth, moderated_worker, caplog):
    generation_id = create(client, auth, prompt=FLAGGED_PROMPT)
    with caplog.at_level(logging.INFO):
        moderated_worker.run_once()
    assert f"prompt {generation_id} flagged: category=sexual score=0.900 by=phrase" in caplog.text
    assert FLAGGED_PROMPT not in caplog.text


def upload(client, auth, data: bytes) -> dict[str, object]:
    created = client.post("/v1/files", json={"mime_type": "image/png", "size_bytes": len(data)}, headers=auth)
    envelope = created.json()["upload"]
    client.put(envelope["url"], content=data, headers=envelope["headers"])
    file_id = created.json()["id"]
    client.post(f"/v1/files/{file_id}/complete", headers=auth)
    return client.get(f"/v1/files/{file_id}", headers=auth).json()


def test_files_ingest_moderates_uploads(client, auth):
    state = client.app.state
    state.services = dataclasses.replace(state.services, moderator=controlled())
    flagged = upload(client, auth, png_bytes((32, 32), FLAGGED_COLOUR))
    assert flagged["state"] == "failed"
    assert flagged["failure_reason"] == f"content_moderated: {Reason.INPUT_MODERATED}"
    assert upload(client, auth, png_bytes((32, 32), (0, 250, 0)))["state"] == "ready"


def test_the_nudenet_checker_applies_the_configured_classes_and_threshold(monkeypatch):
    found = [
        {"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 8, 8]},
        {"class": "BUTTOCKS_EXPOSED", "score": 0.5, "box": [0, 0, 8, 8]},
    ]
    monkeypatch.setattr(NudeNetChecker, "detections", lambda self, image: found)
    image = Image.new("RGB", (8, 8))
    assert NudeNetChecker(threshold=0.45).check(image) == Verdict("sexual", 0.5, "detector:BUTTOCKS_EXPOSED")
    assert NudeNetChecker(threshold=0.6).check(image) is None
    assert NudeNetChecker(classes=["FEMALE_BREAST_EXPOSED"]).check(image) is None


def test_settings_choose_the_checks(tmp_path):
    off = Moderator.from_settings(Settings(data_dir=tmp_path, moderation=False))
    assert (off.text, off.image) == (None, None)
    on = Moderator.from_settings(
        Settings(
            data_dir=tmp_path,
            moderation=True,
            moderation_stages=["output"],
            moderation_text_categories=["hate"],
            moderation_thresholds={"hate": 0.5},
            moderation_image_threshold=0.7,
        )
    )
    assert on.stages == {"output"}
    assert set(on.text.policy) == {"minors", "hate"} and on.text.thresholds["hate"] == 0.5
    assert on.image.threshold == 0.7


def test_moderation_without_its_packages_is_a_clear_startup_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "nudenet" else real(name))
    with pytest.raises(ModerationUnavailable, match=r"nudenet is not installed.*DAGUERRE_MODERATION=0"):
        Moderator.from_settings(Settings(data_dir=tmp_path, moderation=True))
