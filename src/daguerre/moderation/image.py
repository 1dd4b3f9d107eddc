"""Image moderation with NudeNet's ONNX detector (shipped inside the `nudenet` package, run by
onnxruntime on the CPU)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from daguerre.moderation import Verdict

if TYPE_CHECKING:
    from PIL import Image

EXPOSED = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
"""The detector classes blocked by default."""

_lock = threading.Lock()
_detector: Any = None


def detector() -> Any:
    """NudeNet's detector, loaded once per process."""
    global _detector
    with _lock:
        if _detector is None:
            from nudenet import NudeDetector

            _detector = NudeDetector()
        return _detector


class NudeNetChecker:
    def __init__(self, classes: Iterable[str] = EXPOSED, threshold: float = 0.45) -> None:
        self.classes = frozenset(classes)
        self.threshold = threshold

    def warm(self) -> None:
        detector()

    def detections(self, image: Image.Image) -> list[dict[str, Any]]:
        import numpy as np

        pixels = np.asarray(image.convert("RGBA"))  # NudeNet converts RGBA to its BGR itself
        model = detector()
        with _lock:
            found: list[dict[str, Any]] = model.detect(pixels)
        return found

    def check(self, image: Image.Image) -> Verdict | None:
        hits = [
            d for d in self.detections(image) if d["class"] in self.classes and d["score"] >= self.threshold
        ]
        if not hits:
            return None
        best = max(hits, key=lambda d: d["score"])
        return Verdict("sexual", float(best["score"]), f"detector:{best['class']}")
