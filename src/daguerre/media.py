"""Image bytes in and out: base64 decoding with limits, format sniffing, input decoding and
normalisation (with the failure codes of bad inputs), output encoding.

Encoding follows measured costs (docs/engine.md of the design notes): PNG at compression level 1
is 3.5-5x faster than Pillow's default level 6 for 15-25 % more bytes; JPEG at quality 90 costs
about 1 % of a default PNG.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import TYPE_CHECKING

from daguerre.errors import ApiError, JobFailure
from daguerre.wire import ACCEPTED_MIME_TYPES, MAX_INPUT_IMAGE_BYTES, Detail, FailureCode

if TYPE_CHECKING:
    from PIL import Image

PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 90

OUTPUT_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
OUTPUT_EXTENSIONS = {"png": "png", "jpeg": "jpg"}

_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)


def decode_base64(data: str, path: str) -> bytes:
    """Decode an ImageRef's `data` (a leading `data:<type>;base64,` prefix is stripped).

    Raises ApiError 413 past 50 MB (measured after decoding, and refused before decoding when the
    text alone proves it) and 422 for text that is not base64.
    """
    match = _DATA_URL.match(data)
    if match:
        data = data[match.end() :]
    text = "".join(data.split())  # line breaks and spaces are common in pasted base64
    if len(text) // 4 * 3 - 2 > MAX_INPUT_IMAGE_BYTES:
        raise ApiError(413, Detail.ref_too_large(path))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # URL-safe alphabet, as some clients send it
            raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, Detail.ref_bad_base64(path)) from None
    if len(raw) > MAX_INPUT_IMAGE_BYTES:
        raise ApiError(413, Detail.ref_too_large(path))
    if not raw:
        raise ApiError(422, Detail.ref_bad_base64(path))
    return raw


ACCEPTED_FORMATS_TEXT = "still JPEG, PNG, WebP or GIF images"
_ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (  # (bytes, offset, kind)
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"WEBP", 8, "image/webp"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"BM", 0, "BMP"),
    (b"%PDF", 0, "PDF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD"),
)
_FTYP_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF"}


def sniff_media_type(data: bytes) -> str | None:
    """What the bytes' signature says they are: an accepted media type (`image/png`), the name of
    a format daguerre does not take (`TIFF`, `SVG`, `HTML`...), or None when nothing matches."""
    for signature, offset, kind in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature and (
            kind != "image/webp" or data[:4] == b"RIFF"
        ):
            return kind
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12], "ISO media")
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML"
    return None


MAX_ASPECT_RATIO = 20.0
"""Default for the most elongated input accepted (long side over short side): wide enough for
panoramas, and it keeps a picture of 40 million pixels under 28,300 pixels on its long side."""


def load_input(data: bytes, max_pixels: int, max_aspect_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Decode an input image and normalise it to RGB, or raise the JobFailure the spec names.

    * unsupported_format: a format other than JPEG, PNG, WebP or GIF (TIFF, BMP, SVG, HEIC, PDF,
      HTML...), an animated image of any format (GIF, WebP, APNG: the engines take one picture),
      or a shape more elongated than `max_aspect_ratio` (a 1x39,000,000 strip);
    * image_too_large: more than `max_pixels` pixels;
    * corrupt_input: bytes that do not decode (truncated, garbage with an image media type).

    Everything but the last is judged from the header, before the pixels are decoded, so the
    memory a decode takes is bounded by `max_pixels` (at most 4 bytes a pixel, plus the RGB copy).

    Normalisation: EXIF orientation applied; CMYK, palette, grey, 16-bit and float images become
    8-bit RGB; transparency is composed onto white.
    """
    import warnings

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    kind = sniff_media_type(data)
    if kind is not None and kind not in ACCEPTED_MIME_TYPES:
        raise JobFailure(
            FailureCode.UNSUPPORTED_FORMAT, f"Input image is {kind}; accepted: {ACCEPTED_FORMATS_TEXT}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data))
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise JobFailure(FailureCode.IMAGE_TOO_LARGE, "Input image has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise JobFailure(FailureCode.CORRUPT_INPUT, "Input image could not be decoded") from None
    if image.format not in _ACCEPTED_FORMATS:
        raise JobFailure(
            FailureCode.UNSUPPORTED_FORMAT,
            f"Input image is {image.format}; accepted: {ACCEPTED_FORMATS_TEXT}",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise JobFailure(
            FailureCode.IMAGE_TOO_LARGE,
            f"Input image is {width}x{height} ({width * height:,} pixels); the limit is {max_pixels:,}",
        )
    if max(width, height) > max_aspect_ratio * max(1, min(width, height)):
        raise JobFailure(
            FailureCode.UNSUPPORTED_FORMAT,
            f"Input image is {width}x{height}; the most elongated shape accepted is "
            f"{max_aspect_ratio:g}:1 (long side over short side)",
        )
    if getattr(image, "is_animated", False):
        frames = getattr(image, "n_frames", 0)
        raise JobFailure(
            FailureCode.UNSUPPORTED_FORMAT,
            f"Input image is an animated {image.format} ({frames} frames); accepted: still images",
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError):
        raise JobFailure(
            FailureCode.CORRUPT_INPUT, "Input image could not be decoded (truncated or damaged)"
        ) from None
    return normalise(image)


def normalise(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, then 8-bit RGB (alpha composed onto white)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        image = image.convert("I")
    if image.mode == "I":
        image = image.point(lambda value: value * (1 / 257)).convert("L")  # 16-bit to 8-bit, not clipped
    elif image.mode == "F":
        image = image.point(lambda value: value * 255).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La") and (
        "A" in image.getbands() or "transparency" in image.info
    ):
        return _flatten(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def encode_image(image: Image.Image, output_format: str) -> bytes:
    """PNG (fast compression, alpha kept) or JPEG (quality 90, alpha flattened onto white)."""
    buffer = io.BytesIO()
    if output_format == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = _flatten(image)
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    from PIL import Image as PILImage

    rgba = image.convert("RGBA")
    background = PILImage.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
