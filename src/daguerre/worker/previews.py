"""When a running job's preview is drawn, checked and encoded, for the events stream.

The engine offers a preview at every step (engine.base.StepHook); `Previews.take` draws one only
when `preview_every_s` has passed since the engine started or since the last one, so a job that
takes less than that shows none, and a long one shows a picture about every `preview_every_s`. A
preview is a picture the account has not been given yet: where outputs are moderated, each preview
is checked the same way, and after one is flagged the job shows no more (the output check then
decides the job). Previews are JPEG, at most PREVIEW_MAX_SIDE a side.

Cost (bench/previews_bench.py): drawing and encoding one is about 2 ms of CPU; the check is 17 ms
on its own but about 95 ms of CPU inside a job that keeps the CPU busy (NudeNet's and torch's
threads contend), so at the default of one a second a moderated CPU-bound job spends under a tenth
of its CPU on previews.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

from daguerre.engine import DrawPreview
from daguerre.moderation import Moderator

log = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 256
PREVIEW_QUALITY = 75
"""A 256-pixel preview is 5-15 KB: small enough for a database row, a Temporal heartbeat and an
event every second."""


class Previews:
    def __init__(
        self,
        generation_id: str,
        every_s: float,
        moderator: Moderator,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generation_id = generation_id
        self.every_s = every_s
        self._moderator = moderator
        self._clock = clock
        self._next_at = clock() + every_s
        self._stopped = every_s <= 0

    def take(self, draw: DrawPreview | None) -> bytes | None:
        """The preview as JPEG when one is due and the engine can draw it; else None."""
        if draw is None or self._stopped or self._clock() < self._next_at:
            return None
        self._next_at = self._clock() + self.every_s  # also when the engine has none yet
        try:
            return self._shown(draw)
        except Exception:  # a preview is never worth a job: this one shows no more
            log.exception("%s: a preview failed; no more previews of this job", self.generation_id)
            self._stopped = True
            return None

    def _shown(self, draw: DrawPreview) -> bytes | None:
        image = draw()
        if image is None:  # not yet (a diffusers engine's first job, say)
            return None
        image = image.convert("RGB")
        if max(image.size) > PREVIEW_MAX_SIDE:
            image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        if self._moderator.check_image(image, "output", f"{self.generation_id} (preview)") is not None:
            log.info("%s: a preview was flagged; no more previews of this job", self.generation_id)
            self._stopped = True
            return None
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
        return buffer.getvalue()
