"""Checking an uploaded image before anything expensive runs (deploy/python/serve.py).

An upload is refused, with one clear message and a 4xx status, when it is
empty, larger than the body limit, not PNG / JPEG / TIFF, truncated, smaller
than the model can take, or when its header claims more pixels than the
service allows. The size check reads only the header (PNG ``IHDR``, JPEG
``SOFn``, the first TIFF IFD), so a 100 kB file claiming 100000 x 100000
pixels is refused before a decoder allocates anything. Decoding itself is
the toolkit's (:func:`paddleseg_ext.transforms.loading.decode_image_lazy`),
the same code the dataset readers and deploy/python/infer.py use.

Formats: PNG (ISO/IEC 15948 section 11.2.2 for ``IHDR``), JPEG (ITU T.81
annex B.2 for the marker segments), TIFF / BigTIFF (TIFF 6.0; read with
``tifffile``, which parses IFDs without decoding strips).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from paddleseg_ext.transforms.loading import decode_image_lazy, image_format

#: Formats the service takes, and the content types that announce a raw image body.
FORMATS = ("PNG", "JPEG", "TIFF", "BigTIFF")
RAW_CONTENT_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/tiff", "image/tif", "application/octet-stream")
HOW_TO_SEND = ("send the image as the multipart field 'image' (curl -F image=@photo.png URL) or as the raw "
               "body with Content-Type image/png, image/jpeg, image/tiff or application/octet-stream "
               "(curl --data-binary @photo.png -H 'Content-Type: image/png' URL)")


class RequestError(Exception):
    """A request the service answers with ``status`` and one JSON message (never a traceback)."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class ImageLimits:
    """What an upload may be.

    Args:
        max_bytes: largest request body.
        max_pixels: largest ``height * width`` a header may claim.
        max_side: longest side a header may claim.
        min_side: shortest side the model is given (smaller images carry no context for it).
    """

    max_bytes: int = 32 << 20
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    min_side: int = 16


def _png_size(buf: bytes) -> Tuple[int, int]:
    if len(buf) < 33 or buf[12:16] != b"IHDR":
        raise RequestError(400, f"the PNG is truncated or corrupt: no IHDR header ({len(buf)} bytes)")
    return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")


#: Start-of-frame markers (T.81 table B.1): C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(buf: bytes) -> Tuple[int, int]:
    # A truncated JPEG decodes "successfully" into a half-grey image (libjpeg only warns), so
    # the end-of-image marker is required.
    if buf.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise RequestError(400, f"the JPEG is truncated: it does not end with the end-of-image marker "
                                f"({len(buf)} bytes); re-send the whole file")
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            break
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers carry no length
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        if marker in _SOF and pos + 9 <= len(buf):
            return int.from_bytes(buf[pos + 7:pos + 9], "big"), int.from_bytes(buf[pos + 5:pos + 7], "big")
        if marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise RequestError(400, f"the JPEG is corrupt: no frame header with its size ({len(buf)} bytes)")


def _tiff_size(buf: bytes) -> Tuple[int, int]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(buf)) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception as e:  # noqa: BLE001 - any parse failure is a broken upload
        raise RequestError(400, f"the TIFF is truncated or corrupt ({len(buf)} bytes): {e}") from None


def header_size(buf: bytes) -> Tuple[str, int, int]:
    """``(format, width, height)`` from the image's header alone.

    Raises:
        RequestError: 415 for anything but PNG / JPEG / TIFF, 400 for a broken header.
    """
    if not buf:
        raise RequestError(400, f"the request has no image: the body is empty; {HOW_TO_SEND}")
    fmt = image_format(np.frombuffer(buf[:8], np.uint8))
    if fmt not in FORMATS:
        what = f"a {fmt} file" if fmt else f"not an image (first bytes {buf[:8]!r})"
        raise RequestError(415, f"the upload is {what}; this service takes PNG, JPEG or TIFF images")
    if fmt == "PNG":
        w, h = _png_size(buf)
    elif fmt == "JPEG":
        w, h = _jpeg_size(buf)
    else:
        w, h = _tiff_size(buf)
    return fmt, w, h


def check_size(width: int, height: int, limits: ImageLimits) -> None:
    """Refuse a claimed size outside ``limits`` (413 too large, 400 too small)."""
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise RequestError(413, f"the image is {width}x{height} (WxH, {width * height:,} pixels); this service "
                                f"takes at most {limits.max_pixels:,} pixels and {limits.max_side} per side "
                                "(serve.py --max_pixels / --max_side); tile or downscale it")
    if min(width, height) < limits.min_side:
        raise RequestError(400, f"the image is {width}x{height} (WxH); both sides must be at least "
                                f"{limits.min_side} pixels (serve.py --min_side)")


def decode_upload(buf: bytes, name: str, img_channels: int, limits: ImageLimits) -> np.ndarray:
    """The upload as an ``H x W x img_channels`` float32 RGB / band-order array.

    Args:
        buf: the file's bytes.
        name: how messages name it (``upload 'photo.png'``).
        img_channels: bands the model takes.
        limits: size limits, checked on the header before decoding.

    Raises:
        RequestError: every problem with the file, with the status to answer.
    """
    fmt, w, h = header_size(buf)
    check_size(w, h, limits)
    try:
        img, finish = decode_image_lazy(np.frombuffer(buf, np.uint8), name, to_rgb=True,
                                        img_channels=img_channels)
        img = np.ascontiguousarray(finish(img), dtype=np.float32)
    except ValueError as e:
        raise RequestError(400, str(e)) from None
    if img.shape[:2] != (h, w):  # a multi-page TIFF whose pages differ, say: never guess
        raise RequestError(400, f"{name}: the {fmt} header says {w}x{h} but the image decodes to "
                                f"{img.shape[1]}x{img.shape[0]}")
    return img
