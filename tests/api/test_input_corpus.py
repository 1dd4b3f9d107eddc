"""A corpus of bad (and awkward) inputs, built at test time, each with its documented outcome:
a synchronous status or an asynchronous failure code, or a completed, normalised edit."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from daguerre.errors import JobFailure
from daguerre.media import load_input, sniff_media_type
from daguerre.wire import FailureCode


def _png(size=(32, 16), mode="RGB", colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds only a few bytes of pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def animated(format_: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=format_, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def still_gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (16, 16), 3).save(buffer, format="GIF")
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(buffer, format="JPEG")  # red in CMYK
    return buffer.getvalue()


def sixteen_bit_png() -> bytes:
    array = np.full((12, 20), 40000, dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """60x30 pixels stored, with EXIF orientation 6 (display rotated 90°: 30x60)."""
    image = Image.new("RGB", (60, 30), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buffer, format="TIFF")
    return buffer.getvalue()


def webp_with_alpha() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 0, 255, 0)).save(buffer, format="WEBP")
    return buffer.getvalue()


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
HTML = b"<!DOCTYPE html><html><body>hello</body></html>"
RANDOM = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))

ASYNC_CASES = {  # bytes labelled image/png -> failure code
    "truncated png": (_png((200, 200))[:200], FailureCode.CORRUPT_INPUT),
    "random bytes": (RANDOM, FailureCode.CORRUPT_INPUT),
    "animated gif": (animated_gif(), FailureCode.UNSUPPORTED_FORMAT),
    "animated webp": (animated("WEBP"), FailureCode.UNSUPPORTED_FORMAT),
    "animated png (APNG)": (animated("PNG"), FailureCode.UNSUPPORTED_FORMAT),
    "png 1x39000000": (png_header_claiming(1, 39_000_000), FailureCode.UNSUPPORTED_FORMAT),
    "png 30000x2": (_png((30_000, 2)), FailureCode.UNSUPPORTED_FORMAT),
    "png header 40000x40000": (png_header_claiming(40000, 40000), FailureCode.IMAGE_TOO_LARGE),
    "tiff": (tiff(), FailureCode.UNSUPPORTED_FORMAT),
    "svg": (SVG, FailureCode.UNSUPPORTED_FORMAT),
    "html": (HTML, FailureCode.UNSUPPORTED_FORMAT),
    "pdf": (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", FailureCode.UNSUPPORTED_FORMAT),
    "bmp": (b"BM" + b"\0" * 64, FailureCode.UNSUPPORTED_FORMAT),
    "heic": (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", FailureCode.UNSUPPORTED_FORMAT),
}


def edit(client, auth, data: bytes, media_type: str = "image/png"):
    source = {"data": base64.b64encode(data).decode(), "media_type": media_type}
    return client.post(
        "/v1/generations", json={"prompt": "x", "type": "image_edit", "source": source}, headers=auth
    )


@pytest.mark.parametrize("name", list(ASYNC_CASES))
def test_bad_bytes_fail_the_generation_with_their_code(client, auth, worker, name):
    data, code = ASYNC_CASES[name]
    response = edit(client, auth, data)
    assert response.status_code == 201, response.text
    outcome = worker.run_once()
    assert outcome.failure_code == code, name
    body = client.get(f"/v1/generations/{response.json()['id']}", headers=auth).json()
    assert body["state"] == "failed" and body["failure_code"] == code.value
    assert body["failure_reason"]


@pytest.mark.parametrize(
    ("data", "media_type", "detail"),
    [
        (tiff(), "image/tiff", "source: unsupported image format"),
        (SVG, "image/svg+xml", "source: unsupported image format"),
        (b"\0\0\0\x18ftypheic", "image/heic", "source: unsupported image format"),
        (HTML, "text/html", "source: content-type is not an image"),
        (b"%PDF-1.7", "application/pdf", "source: content-type is not an image"),
    ],
)
def test_declared_types_that_are_not_accepted_images_are_refused_at_once(
    client, auth, data, media_type, detail
):
    response = edit(client, auth, data, media_type)
    assert (response.status_code, response.json()) == (422, {"detail": detail})


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (cmyk_jpeg(), (24, 24)),
        (sixteen_bit_png(), (20, 12)),
        (exif_rotated_jpeg(), (30, 60)),
        (still_gif(), (16, 16)),
        (webp_with_alpha(), (10, 10)),
        (_png((20, 10), "P"), (20, 10)),
        (_png((20, 10), "LA", (100, 50)), (20, 10)),
    ],
    ids=[
        "cmyk-jpeg",
        "16-bit-png",
        "exif-rotated-jpeg",
        "still-gif",
        "webp-alpha",
        "palette-png",
        "grey-alpha-png",
    ],
)
def test_awkward_but_valid_inputs_are_normalised(client, auth, worker, data, size):
    image = load_input(data, max_pixels=40_000_000)
    assert (image.mode, image.size) == ("RGB", size)
    response = edit(client, auth, data, sniff_media_type(data) or "image/png")
    assert response.status_code == 201
    assert worker.run_once().failure_code is None


def test_normalisation_keeps_the_colours():
    red = load_input(cmyk_jpeg(), 10**6).getpixel((5, 5))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    grey = load_input(sixteen_bit_png(), 10**6).getpixel((0, 0))
    assert grey == (155, 155, 155)  # 40000 / 257, not clipped to white
    transparent = load_input(webp_with_alpha(), 10**6).getpixel((0, 0))
    assert transparent == (255, 255, 255)  # composed onto white


def test_the_pixel_limit_is_checked_before_decoding():
    with pytest.raises(JobFailure) as failure:
        load_input(_png((300, 300)), max_pixels=300 * 299)
    assert failure.value.code == FailureCode.IMAGE_TOO_LARGE
    assert "300x300" in failure.value.reason


def test_the_aspect_ratio_limit_is_inclusive_and_configurable():
    assert load_input(_png((200, 10)), 10**6).size == (200, 10)  # exactly 20:1
    with pytest.raises(JobFailure) as failure:
        load_input(_png((201, 10)), 10**6)
    assert failure.value.code == FailureCode.UNSUPPORTED_FORMAT
    assert (
        failure.value.reason
        == "Input image is 201x10; the most elongated shape accepted is 20:1 (long side over short side)"
    )
    assert load_input(_png((400, 10)), 10**6, max_aspect_ratio=40).size == (400, 10)


def test_an_extremely_elongated_real_png_is_refused_before_decoding():
    """The 5 KB 1x39,000,000 PNG of the fault-injection run: refused from its header."""
    data = _png((1, 39_000_000), "L", 200)
    assert len(data) < 100_000
    with pytest.raises(JobFailure) as failure:
        load_input(data, 40_000_000)
    assert failure.value.code == FailureCode.UNSUPPORTED_FORMAT
