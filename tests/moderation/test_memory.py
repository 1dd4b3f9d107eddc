"""Image checks work on a bounded copy: the memory a check takes does not follow the picture's
shape. Each case runs in a fresh process and reports its peak resident memory (VmHWM, reset
before the check)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from daguerre.moderation import IMAGE_CHECK_MAX_SIDE, bounded_copy
from support.helpers import subprocess_env

CHECK_IN_A_FRESH_PROCESS = """
import json, sys
from PIL import Image
from daguerre.moderation.image import NudeNetChecker
from daguerre.moderation import Moderator

def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

width, height, bounded = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "bounded"
checker = NudeNetChecker()
checker.warm()
# The peak is reset here (the peak a forked child inherits from its parent, and that of loading
# the detector, are not the check's), then read back after the check.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
baseline = status_mb("VmRSS")
image = Image.new("RGB", (width, height), (200, 180, 160))
if bounded:
    verdict = Moderator(None, checker).check_image(image, "inputs", "test")
else:
    verdict = checker.check(image)
print(json.dumps({"baseline_mb": baseline, "peak_mb": status_mb("VmHWM"), "flagged": verdict is not None}))
"""


def peak_memory(width: int, height: int, bounded: bool) -> dict[str, float]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CHECK_IN_A_FRESH_PROCESS,
            str(width),
            str(height),
            "bounded" if bounded else "raw",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


@pytest.mark.parametrize(("width", "height"), [(40_000, 1_000), (1_000, 40_000), (6_324, 6_324)])
def test_a_legal_picture_of_any_shape_is_checked_in_bounded_memory(width, height):
    measured = peak_memory(width, height, bounded=True)
    picture_mb = width * height * 3 / 2**20  # the RGB picture itself (114 MB)
    # Beyond the detector and the picture: the RGB picture (made before the check) and a little.
    assert measured["peak_mb"] - measured["baseline_mb"] < picture_mb + 200, measured
    assert not measured["flagged"]


def test_the_detector_given_the_whole_picture_would_take_gigabytes():
    """The reason for the bounded copy, measured: NudeNet pads to a square of the long side."""
    measured = peak_memory(20_000, 500, bounded=False)  # 10 M pixels; its padded square is 400 M
    assert measured["peak_mb"] - measured["baseline_mb"] > 1_000, measured


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((4000, 3000), (1024, 768)),
        ((40_000, 1_000), (1024, 26)),
        ((1, 39_000), (1, 1024)),
        ((800, 600), (800, 600)),
    ],
)
def test_the_bounded_copy_keeps_the_shape(size, expected):
    image = Image.new("RGB", size)
    copy = bounded_copy(image)
    assert copy.size == expected
    assert max(copy.size) <= IMAGE_CHECK_MAX_SIDE
    if size == expected:
        assert copy is image  # small pictures are not copied
