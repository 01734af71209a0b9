"""Reading images and label maps from disk with clear errors.

Files are read as bytes (``np.fromfile``) and decoded with ``cv2.imdecode``,
so paths with spaces or non-ASCII characters work on every platform. PNGs that
libspng decodes to exactly OpenCV's pixels (8-bit grey, RGB or RGBA,
non-interlaced, no ``tRNS`` chunk: Cityscapes, CamVid and most label maps)
go through ``pyspng`` when it is installed, about 1.8x faster than OpenCV's
PNG decoder; anything else, or a file libspng refuses, takes the OpenCV path
(which also words the errors).

Images: gray ``HxW`` becomes ``HxWx1`` (replicated to 3 channels when 3 are
wanted), the alpha channel of RGBA is dropped when 3 channels are wanted,
16-bit images are scaled to the 0..255 float range (so the usual ``Normalize``
settings apply), and BGR is turned into RGB when asked.

Multi-band imagery (remote sensing): TIFF / GeoTIFF files, multi-page or
multi-sample, any band count, are read with ``tifffile`` (bands in the
file's order; OpenCV serves as a fallback when ``tifffile`` is missing or
refuses a file, up to 4 bands), and ``.npy`` arrays (``HxW`` or ``HxWxC``,
bands in stored order, never unpickled). Pixel types: uint8 and uint16 (both
reach the transforms in the 0..255 range: 16-bit as ``raw / 257``), int8,
int16, int32, float16/32/64 (as stored; floats must be finite). Anything else,
or a band count that differs from ``img_channels``, is a ValueError that
names the file.

Labels must be single-channel class-index maps. OpenCV expands palette PNGs
(like Pascal VOC's ``SegmentationClass``) to colour, so those are read with
Pillow, which keeps the palette indices.
"""

from __future__ import annotations

import functools
import io
import os
from typing import Callable, Optional, Tuple

import cv2
import numpy as np

try:  # optional (a requirement, but the OpenCV path serves without it)
    import pyspng as _pyspng
except ImportError:  # pragma: no cover - depends on the environment
    _pyspng = None

try:  # a requirement; without it TIFFs go through OpenCV (at most 4 bands)
    import tifffile as _tifffile
except ImportError:  # pragma: no cover - depends on the environment
    _tifffile = None

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NPY_SIGNATURE = b"\x93NUMPY"
# Pixel types an image may have (unsigned 8/16-bit: the 0..255 range; others as stored).
IMAGE_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int8, np.int16, np.int32,
                                            np.float16, np.float32, np.float64))
# dtypes cv2.cvtColor takes for the BGR(A) -> RGB channel swap.
_CV_COLOR_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.float32))


def _read_bytes(path: str, what: str) -> np.ndarray:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} path must be a string, got {type(path).__name__}: {path!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise type(e)(e.errno, f"cannot read {what} file {path}: {e.strerror or e}") from None
    if buf.size == 0:
        raise ValueError(f"{what} file is empty (0 bytes): {path}")
    return buf


_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"II+\x00": "BigTIFF",
               b"MM\x00+": "BigTIFF", b"RIFF": "WebP", _NPY_SIGNATURE: "NPY"}


def image_format(buf: np.ndarray) -> Optional[str]:
    """The image format named by the file's first bytes, or None."""
    head = bytes(buf[:8])
    for sig, name in _SIGNATURES.items():
        if head.startswith(sig):
            return name
    return None


def _decode(buf: np.ndarray, path: str, what: str) -> np.ndarray:
    try:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. an image too large for OpenCV's limits
        raise ValueError(f"cannot decode {what} file {path}: {str(e).strip()}") from None
    if arr is None:
        fmt = image_format(buf)
        if fmt:
            raise ValueError(f"cannot decode {what} file {path}: it starts like a {fmt} file but is "
                             f"truncated or corrupt ({buf.size} bytes); re-copy or re-export it")
        raise ValueError(
            f"cannot decode {what} file {path}: not an image format OpenCV can read "
            f"(PNG, JPEG, TIFF, BMP, ...); first bytes {bytes(buf[:8])!r}")
    return arr


def _spng_compatible(buf: np.ndarray) -> bool:
    """True when libspng decodes this PNG to the same pixels as ``cv2.imdecode``
    (``IMREAD_UNCHANGED``), channel order aside.

    That is checked for 8-bit grey (colour type 0), RGB (2) and RGBA (6)
    without interlacing. Excluded: 16-bit (pyspng returns other channel
    counts), palette and grey+alpha, and any ``tRNS`` chunk (OpenCV then adds
    an alpha channel; it must come before the first ``IDAT``, so only the
    header chunks are walked).
    """
    if _pyspng is None or buf.size < 45 or bytes(buf[:8]) != _PNG_SIGNATURE:
        return False
    if int(buf[24]) != 8 or int(buf[25]) not in (0, 2, 6) or int(buf[28]) != 0:
        return False
    view, pos = memoryview(buf), 8
    while pos + 8 <= buf.size:
        kind = bytes(view[pos + 4:pos + 8])
        if kind == b"IDAT":
            return True
        if kind == b"tRNS":
            return False
        pos += 12 + int.from_bytes(view[pos:pos + 4], "big")
    return False


def _decode_rgb_fast(buf: np.ndarray) -> Optional[np.ndarray]:
    """The PNG decoded by libspng (grey ``HxW``, or RGB / RGBA order), or None
    when :func:`_spng_compatible` says no or libspng fails (the caller then
    decodes with OpenCV, which also reports a broken file)."""
    if not _spng_compatible(buf):
        return None
    try:
        return _pyspng.load(buf.tobytes())
    except Exception:  # noqa: BLE001 - any refusal: OpenCV decides and words the error
        return None


def read_image(path: str, to_rgb: bool = True, img_channels: int = 3) -> np.ndarray:
    """Read an image file as ``HxWxC`` float32.

    Args:
        path: image file.
        to_rgb: convert OpenCV's BGR order to RGB (3-channel images only).
        img_channels: channels wanted. 3: gray is replicated and alpha dropped;
            any other value: the file must have exactly that many channels.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: undecodable file, or a channel count that cannot be
            turned into ``img_channels``.
    """
    img, finish = read_image_lazy(path, to_rgb, img_channels)
    return np.ascontiguousarray(finish(img), dtype=np.float32)


def read_image_lazy(path: str, to_rgb: bool = True, img_channels: int = 3
                    ) -> Tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """:func:`read_image` in two halves: the decoded image with its channel
    count fixed, and ``finish``, the per-pixel rest (channel swap, float32).

    ``finish`` works on any slice of the image, so a caller that only needs
    a window (the fused resize + crop) converts just that window; the values
    are those of :func:`read_image` either way.
    """
    return decode_image_lazy(_read_bytes(path, "image"), path, to_rgb, img_channels)


def decode_image_lazy(buf: np.ndarray, path: str, to_rgb: bool = True, img_channels: int = 3
                      ) -> Tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """:func:`read_image_lazy` for a file already in memory (uint8 ``buf``).

    ``path`` only names the image in error messages (an upload's name, say).
    """
    fmt = image_format(buf)
    if fmt in ("TIFF", "BigTIFF", "NPY"):
        img = _decode_npy(buf, path) if fmt == "NPY" else _decode_tiff(buf, path)
        if img is not None:
            _check_image_dtype(img, path)
            # Bands in stored order (RGB for a colour file), as libspng's: swap only when BGR is wanted.
            return prepare_image_lazy(img, to_rgb=not to_rgb, img_channels=img_channels, path=path)
    img = _decode_rgb_fast(buf)
    if img is not None and (img.ndim == 2 or img_channels == 3):
        # Already RGB(A): swapping gives BGR, so swap only when BGR is wanted.
        # (Other channel counts keep OpenCV's order, hence the OpenCV path.)
        return prepare_image_lazy(img, to_rgb=not to_rgb, img_channels=img_channels, path=path)
    img = _decode(buf, path, "image")
    _check_image_dtype(img, path)
    return prepare_image_lazy(img, to_rgb=to_rgb, img_channels=img_channels, path=path)


def _decode_npy(buf: np.ndarray, path: str) -> np.ndarray:
    """A ``.npy`` image as ``HxW`` / ``HxWxC`` (object arrays are refused, never unpickled)."""
    try:
        arr = np.load(io.BytesIO(buf.tobytes()), allow_pickle=False)
    except ValueError as e:  # object dtype (pickle), truncated data, bad header
        raise ValueError(f"cannot read image file {path} as a .npy array: {e}") from None
    if arr.ndim == 3 and arr.shape[0] < min(arr.shape[1:]) and arr.shape[2] > arr.shape[0] and \
            arr.shape[0] <= 64:
        raise ValueError(f"image file {path} holds an array of shape {arr.shape}, which looks "
                         f"channel-first (CxHxW); .npy images must be HxW or HxWxC (save "
                         f"arr.transpose(1, 2, 0))")
    return arr


def _decode_tiff(buf: np.ndarray, path: str) -> Optional[np.ndarray]:
    """A TIFF's image as ``HxW`` / ``HxWxC``, or None when ``tifffile``
    is not installed or cannot decode it (e.g. a compression that needs
    ``imagecodecs``): the caller then tries OpenCV, which words the error.

    Bands may be stored as samples (``YXS``), planes (``SYX``) or pages (``IYX``
    / ``QYX``); all become the last axis, in the file's order.
    """
    if _tifffile is None:
        return None
    try:
        with _tifffile.TiffFile(io.BytesIO(buf.tobytes())) as tif:
            series = tif.series
            if len(series) > 1 and all(len(x.shape) == 2 and x.shape == series[0].shape
                                       and x.dtype == series[0].dtype for x in series):
                # One single-band page per band, each its own series (a plain page stack).
                arr, axes = np.stack([x.asarray() for x in series]), "I" + series[0].axes
            else:
                arr, axes = series[0].asarray(), series[0].axes
    except Exception:  # noqa: BLE001 - any refusal: OpenCV decides and words the error
        return None
    # Drop length-1 axes other than the image plane, then put Y, X first.
    keep = [i for i, a in enumerate(axes) if a in "YX" or arr.shape[i] > 1]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "Y" not in axes or "X" not in axes or len(axes) > 3:
        raise ValueError(f"image file {path}: TIFF image of shape {arr.shape} (axes {axes!r}) is "
                         f"not a 2-D image with bands; one image with any number of bands (as "
                         f"samples, planes or pages) is expected")
    order = [axes.index("Y"), axes.index("X")] + [i for i, a in enumerate(axes) if a not in "YX"]
    return np.ascontiguousarray(arr.transpose(order))


def _check_image_dtype(img: np.ndarray, path: str) -> None:
    """ValueError naming the file for pixel types the toolkit does not read, or
    non-finite float pixels."""
    if img.dtype not in IMAGE_DTYPES:
        allowed = ", ".join(str(d) for d in IMAGE_DTYPES)
        raise ValueError(f"image file {path} has pixel type {img.dtype}, which is not supported "
                         f"(allowed: {allowed}); convert it, e.g. to float32")
    if img.dtype.kind == "f" and img.size and not np.isfinite(img).all():
        bad = int(img.size - np.isfinite(img).sum())
        raise ValueError(f"image file {path} has {bad} non-finite (NaN/inf) pixel value(s); "
                         f"replace no-data pixels with a finite value (and label them ignore_index)")


def prepare_image(img: np.ndarray, to_rgb: bool = True, img_channels: int = 3,
                  path: Optional[str] = None, bgr_input: bool = True) -> np.ndarray:
    """Bring a decoded image to ``HxWx img_channels`` float32 (see :func:`read_image`).

    ``bgr_input=False`` is for arrays that are already RGB (no channel swap).
    """
    img, finish = prepare_image_lazy(img, to_rgb, img_channels, path, bgr_input)
    return np.ascontiguousarray(finish(img), dtype=np.float32)


def prepare_image_lazy(img: np.ndarray, to_rgb: bool = True, img_channels: int = 3,
                       path: Optional[str] = None, bgr_input: bool = True
                       ) -> Tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """:func:`prepare_image` in two halves (see :func:`read_image_lazy`).

    Raises:
        ValueError: a shape or channel count that cannot be turned into
            ``img_channels`` (checked here, not in ``finish``).
    """
    where = f" ({path})" if path else ""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"image{where} must be HxW or HxWxC, got shape {img.shape}")
    c = img.shape[2]
    swap = False
    if img_channels == 3:
        swap = to_rgb and bgr_input
        if c == 1:
            img = np.repeat(img, 3, axis=2)  # equal channels: the order does not matter
            swap = False
        elif c == 4:
            if swap and img.dtype in _CV_COLOR_DTYPES and img.size:
                img, swap = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), False  # drop alpha + swap
            else:
                img = img[:, :, :3]  # drop alpha
        elif c != 3:
            raise ValueError(
                f"image{where} has {c} channels; with img_channels=3 it must have "
                f"1 (gray), 3 (colour) or 4 (colour + alpha). Set img_channels={c} "
                f"for multi-band data")
    elif c != img_channels:
        raise ValueError(f"image{where} has {c} channels but img_channels={img_channels}")
    return img, functools.partial(_finish_image, swap=swap)


def _finish_image(img: np.ndarray, swap: bool) -> np.ndarray:
    """BGR -> RGB (if ``swap``) and float32 (uint16 scaled to 0..255), per pixel."""
    if swap:
        # cv2 swaps into a contiguous array (~15x faster than converting the
        # reversed numpy view to float32 below); same values either way.
        img = (cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.dtype in _CV_COLOR_DTYPES and img.size
               else img[:, :, ::-1])
    if img.dtype == np.uint16:
        return img.astype(np.float32) * np.float32(255.0 / 65535.0)
    return img if img.dtype == np.float32 else img.astype(np.float32)


def _is_palette_png(buf: np.ndarray) -> bool:
    # IHDR is always the first chunk: colour type sits at byte 25 (3 = palette).
    return buf.size > 26 and bytes(buf[:8]) == _PNG_SIGNATURE and int(buf[25]) == 3


def read_label(path: str) -> np.ndarray:
    """Read a class-index label map as ``HxW`` (uint8/uint16/int).

    Palette PNGs give their palette indices. A 3/4-channel file whose colour
    channels are identical (grey saved as RGB) is accepted; a real colour
    image is rejected.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: undecodable file, colour-coded (RGB) label, or
            non-integer values.
    """
    buf = _read_bytes(path, "label")
    if _is_palette_png(buf):
        try:
            from PIL import Image
        except ImportError as e:  # pragma: no cover - pillow is a requirement
            raise ValueError(
                f"label file {path} is a palette PNG; reading its class indices "
                f"needs Pillow (pip install pillow)") from e
        try:
            with Image.open(path) as im:
                label = np.array(im)
        except (OSError, SyntaxError, ValueError) as e:  # PIL: truncated / broken file
            raise ValueError(f"cannot decode label file {path}: palette PNG is truncated or "
                             f"corrupt ({e})") from None
    else:
        # Channel order does not matter for a label (its channels must be equal).
        label = _decode_rgb_fast(buf)
        if label is None:
            label = _decode(buf, path, "label")
    return check_label_array(label, path)


def check_label_array(label: np.ndarray, path: Optional[str] = None) -> np.ndarray:
    """Validate/convert a label array to ``HxW`` integers (see :func:`read_label`)."""
    where = f"label file {path}" if path else "label array"
    if label.ndim == 3:
        c = label.shape[2]
        if c == 1:
            label = label[:, :, 0]
        elif c in (3, 4) and np.array_equal(label[:, :, 0], label[:, :, 1]) and \
                np.array_equal(label[:, :, 0], label[:, :, 2]):
            label = label[:, :, 0]
        else:
            raise ValueError(
                f"{where} is an RGB colour image ({c} channels, shape {label.shape}); "
                f"an index/grayscale PNG is expected: one channel whose pixel values are "
                f"class ids (0..num_classes-1, ignore_index such as 255 for void). "
                f"Convert colour-coded masks to class ids first")
    if label.ndim != 2:
        raise ValueError(f"{where} must be HxW, got shape {label.shape}")
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
            raise ValueError(f"{where} has non-integer values; labels must be class ids")
        label = label.astype(np.int64)
    elif label.dtype.kind not in "iub":
        raise ValueError(f"{where} has unsupported dtype {label.dtype}")
    return label
