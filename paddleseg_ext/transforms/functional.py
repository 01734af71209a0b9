"""Array-level helpers behind the transform classes.

Conventions: images are ``HxWxC`` float32 (any channel count), labels are
``HxW`` integer maps. Sizes passed to resize helpers are ``(width, height)``
like OpenCV and PaddleSeg; shapes recorded in ``trans_info`` are
``(height, width)``.

Labels are never interpolated: :func:`resize_nearest` and
:func:`warp_affine_nearest` sample them with plain numpy indexing, which works
for every integer dtype and uses the same pixel-centre convention as OpenCV's
bilinear image resize, so labels stay aligned with the resized image.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

PadValue = Union[float, Sequence[float]]

INTERP_MODES = {
    "NEAREST": cv2.INTER_NEAREST,
    "LINEAR": cv2.INTER_LINEAR,
    "CUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA,
    "LANCZOS4": cv2.INTER_LANCZOS4,
}


# --------------------------------------------------------------------------- #
# OpenCV channel handling
# --------------------------------------------------------------------------- #
def _per_chunk(img: np.ndarray, fn: Callable[[np.ndarray, int, int], np.ndarray],
               max_ch: int = 4) -> np.ndarray:
    """Apply an OpenCV op to ``img`` in chunks of at most ``max_ch`` channels.

    Several OpenCV functions take a 4-element border Scalar or drop a trailing
    channel axis of size 1; chunking keeps any channel count working and the
    output always ``HxWxC``. ``fn(chunk, start, stop)`` gets the channel range
    so per-channel arguments (padding values) can be sliced.
    """
    if img.ndim == 2:
        return fn(img, 0, 1)
    outs = []
    for s in range(0, img.shape[2], max_ch):
        e = min(s + max_ch, img.shape[2])
        out = fn(img[:, :, s:e], s, e)
        if out.ndim == 2:
            out = out[:, :, None]
        outs.append(out)
    return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)


def pad_values(value: PadValue, channels: int, what: str = "im_padding_value") -> np.ndarray:
    """Broadcast a scalar or per-channel padding value to ``channels`` floats.

    Raises:
        ValueError: a sequence whose length is neither 1 nor ``channels``.
    """
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return np.full(channels, float(arr[0]))
    if arr.size != channels:
        raise ValueError(
            f"{what} has {arr.size} values {list(arr)} but the image has {channels} "
            f"channels; give one value or one per channel")
    return arr


# --------------------------------------------------------------------------- #
# Resizing
# --------------------------------------------------------------------------- #
def resize(img: np.ndarray, size: Tuple[int, int], interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize an image to ``size=(width, height)`` with an OpenCV interpolation."""
    w, h = int(size[0]), int(size[1])
    if img.shape[0] == h and img.shape[1] == w:
        return img
    if interp == cv2.INTER_NEAREST:
        return resize_nearest(img, (w, h))
    # INTER_AREA shrinking supports at most 4 channels in OpenCV; the others take any number.
    max_ch = 4 if interp == cv2.INTER_AREA else 512
    return _per_chunk(img, lambda c, s, e: cv2.resize(c, (w, h), interpolation=interp), max_ch)


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index sampled by each of ``dst`` outputs along an axis of length ``src``.

    ``floor((d + 0.5) * src / dst)``: the pixel whose centre is nearest the
    destination pixel centre (OpenCV's bilinear geometry), clamped to the axis.
    """
    return np.minimum(((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64), src - 1)


def resize_nearest(arr: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label (or any array) to ``(width, height)``.

    Samples source pixel ``floor((dst + 0.5) * src / dst)``: the pixel whose
    centre is nearest the destination pixel centre, matching the geometry of
    OpenCV's bilinear resize. Works for any dtype and keeps extra axes.
    """
    w, h = int(size[0]), int(size[1])
    src_h, src_w = arr.shape[:2]
    if (src_h, src_w) == (h, w):
        return arr
    return resize_nearest_window(arr, (w, h), 0, 0, h, w)


def resize_nearest_window(arr: np.ndarray, size: Tuple[int, int], top: int, left: int,
                          height: int, width: int) -> np.ndarray:
    """``resize_nearest(arr, size)[top:top+height, left:left+width]`` without the rest.

    The same indices as the full resize, restricted to the window, so the
    result is identical. Two ``take`` calls (rows, then columns) gather
    contiguous rows first, which is about twice as fast as one 2-D fancy index.
    """
    w, h = int(size[0]), int(size[1])
    ys = nearest_indices(arr.shape[0], h)[top:top + height]
    xs = nearest_indices(arr.shape[1], w)[left:left + width]
    return arr.take(ys, axis=0).take(xs, axis=1)


def _lattice_span(src: int, dst: int, start: int, stop: int) -> Tuple[int, int, int, int]:
    """Source span ``[s0, s1)`` and output span ``[d0, d1)`` of a partial resize.

    Along one axis an ``src -> dst`` resize repeats every ``P = dst / g``
    outputs and ``Q = src / g`` inputs (``g = gcd``). Cutting both at a
    multiple of that period gives a sub-resize with the same exact scale ratio
    and, relative to its own origin, the same sampling positions as the full
    one, so OpenCV computes the same interpolation coefficients. ``[d0, d1)``
    covers the wanted ``[start, stop)`` plus a margin wide enough that no
    wanted output reads past the sub-image border (where OpenCV clamps).
    """
    g = math.gcd(src, dst)
    p, q = dst // g, src // g
    # Bilinear reads floor(x) and floor(x) + 1 for x = (d + 0.5) * q / p - 0.5;
    # ceil(0.5 * (p / q - 1)) outputs of margin keep x inside, +1 for rounding.
    margin = max(0, math.ceil(0.5 * (p / q - 1))) + 1
    d0 = max(0, (start - margin) // p * p)
    d1 = min(dst, -(-(stop + margin) // p) * p)
    return d0 * q // p, d1 * q // p, d0, d1


def resize_window(img: np.ndarray, size: Tuple[int, int], top: int, left: int,
                  height: int, width: int, interp: int = cv2.INTER_LINEAR,
                  convert: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> np.ndarray:
    """``resize(img, size, interp)[top:top+height, left:left+width]``, computing
    (about) only the window.

    For ``INTER_LINEAR`` the window is cut out of a resize of a period-aligned
    sub-image (see :func:`_lattice_span`), which samples the same source
    positions with the same scale ratio. Where OpenCV computes the
    coefficients exactly (its IPP path in the x86 wheels: 1, 3 or 4 channels,
    sources wider and taller than one pixel) the result is bit-identical to
    resize-then-crop. Elsewhere (other channel counts, builds without IPP)
    OpenCV rounds each full-image source coordinate to float32 and the
    sub-image's smaller coordinate rounds less: the two differ by at most half
    a float32 ulp of the coordinate (<= 2**-24 * max(h, w) of the source, in
    pixels) per axis, times the intensity step between neighbouring source
    pixels (measured <= 0.016 grey levels on uniform 0..255 noise 2048 px
    wide; tested in tests/test_transforms.py). When the sizes share no useful
    period the whole image is resized (exact). ``INTER_NEAREST`` is exact;
    other interpolations resize the whole image and crop.

    ``convert``: a per-pixel function (e.g. the dtype conversion of a lazily
    read image) applied to the source pixels before resizing, to just those
    the window needs.
    """
    w, h = int(size[0]), int(size[1])
    src_h, src_w = img.shape[:2]
    conv = convert if convert is not None else (lambda a: a)
    if (src_h, src_w) == (h, w):
        return conv(crop(img, top, left, height, width))
    if interp == cv2.INTER_NEAREST:
        return conv(resize_nearest_window(img, (w, h), top, left, height, width))
    if interp != cv2.INTER_LINEAR:
        return crop(resize(conv(img), (w, h), interp), top, left, height, width)
    sy0, sy1, dy0, dy1 = _lattice_span(src_h, h, top, top + height)
    sx0, sx1, dx0, dx1 = _lattice_span(src_w, w, left, left + width)
    part = resize(conv(img[sy0:sy1, sx0:sx1]), (dx1 - dx0, dy1 - dy0), interp)
    return crop(part, top - dy0, left - dx0, height, width)


def rescale_size(img_size: Tuple[int, int], target_size: Tuple[int, int]) -> Tuple[int, int]:
    """Largest ``(w, h)`` keeping the aspect ratio that fits ``target_size``.

    The long image side is bounded by the long target side and the short side
    by the short target side (the mmseg/PaddleSeg ``keep_ratio`` rule), so
    ``target_size=(2048, 512)`` works for both portrait and landscape images.
    Halves round up, as mmcv's ``rescale_size`` does (Python's ``round`` would take
    2048x1024 fitted into 2049x1025 to 2049x1024, where mmseg tests at 2049x1025).
    """
    w, h = img_size
    scale = min(max(target_size) / max(w, h), min(target_size) / min(w, h))
    return max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))


def size_for_long(shape: Tuple[int, int], long_size: int) -> Tuple[int, int]:
    """``(w, h)`` after scaling ``shape=(h, w)`` so its long side is ``long_size``."""
    h, w = shape
    scale = long_size / max(h, w)
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def size_for_short(shape: Tuple[int, int], short_size: int) -> Tuple[int, int]:
    """``(w, h)`` after scaling ``shape=(h, w)`` so its short side is ``short_size``."""
    h, w = shape
    scale = short_size / min(h, w)
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


# --------------------------------------------------------------------------- #
# Padding, cropping, flipping
# --------------------------------------------------------------------------- #
def pad(arr: np.ndarray, bottom: int, right: int, value: PadValue,
        top: int = 0, left: int = 0) -> np.ndarray:
    """Constant-pad an ``HxW`` or ``HxWxC`` array; ``value`` may be per channel."""
    if top == bottom == left == right == 0:
        return arr
    h, w = arr.shape[:2]
    out_shape = (h + top + bottom, w + left + right) + arr.shape[2:]
    out = np.empty(out_shape, dtype=arr.dtype)
    if arr.ndim == 3:
        out[...] = pad_values(value, arr.shape[2]).astype(arr.dtype)
    else:
        out[...] = value
    out[top:top + h, left:left + w] = arr
    return out


def crop(arr: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Crop ``arr[top:top+height, left:left+width]``."""
    return arr[top:top + height, left:left + width]


# dtypes cv2.flip keeps (it turns int64 into int32, refuses bool and float16).
_CV_FLIP_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16,
                                                  np.int32, np.float32, np.float64))


def _flip(arr: np.ndarray, axis: int) -> np.ndarray:
    """Reverse ``arr`` along ``axis`` (0 or 1) into a new contiguous array."""
    if (arr.dtype in _CV_FLIP_DTYPES and arr.ndim in (2, 3) and arr.size
            and (arr.ndim == 2 or arr.shape[2] <= 512)):
        # cv2.flip is ~4x faster than copying a reversed numpy view; it drops
        # a trailing channel axis of size 1, hence the reshape.
        return cv2.flip(arr, axis).reshape(arr.shape)  # flipCode 1: left-right, 0: up-down
    return np.ascontiguousarray(np.flip(arr, axis))


def horizontal_flip(arr: np.ndarray) -> np.ndarray:
    """Mirror left-right (a new contiguous array)."""
    return _flip(arr, 1)


def vertical_flip(arr: np.ndarray) -> np.ndarray:
    """Mirror top-bottom (a new contiguous array)."""
    return _flip(arr, 0)


# --------------------------------------------------------------------------- #
# Rotation
# --------------------------------------------------------------------------- #
def rotation_matrix(shape: Tuple[int, int], angle: float) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Affine matrix rotating ``shape=(h, w)`` by ``angle`` degrees (counter-
    clockwise) about its centre onto an enlarged canvas that holds the whole
    rotated image, and that canvas size ``(w, h)``."""
    h, w = shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    new_w = int(h * sin + w * cos)
    new_h = int(h * cos + w * sin)
    m[0, 2] += new_w / 2.0 - w / 2.0
    m[1, 2] += new_h / 2.0 - h / 2.0
    return m, (max(1, new_w), max(1, new_h))


def warp_affine(img: np.ndarray, matrix: np.ndarray, size: Tuple[int, int],
                value: PadValue, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``cv2.warpAffine`` for any channel count with a constant border."""
    channels = img.shape[2] if img.ndim == 3 else 1
    vals = pad_values(value, channels)

    def _warp(chunk, s, e):
        border = tuple(float(v) for v in vals[s:e]) + (0.0,) * (4 - (e - s))
        return cv2.warpAffine(chunk, matrix, size, flags=interp,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    return _per_chunk(img, _warp)


def warp_affine_nearest(arr: np.ndarray, matrix: np.ndarray, size: Tuple[int, int],
                        value: float) -> np.ndarray:
    """Nearest-neighbour affine warp of a label map (any dtype), constant border.

    Uses the same destination->source mapping as ``cv2.warpAffine`` so the
    label follows the image warped with :func:`warp_affine`.
    """
    w, h = size
    inv = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.rint(inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]).astype(np.int64)
    sy = np.rint(inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]).astype(np.int64)
    inside = (sx >= 0) & (sx < arr.shape[1]) & (sy >= 0) & (sy < arr.shape[0])
    out = np.full((h, w) + arr.shape[2:], value, dtype=arr.dtype)
    out[inside] = arr[sy[inside], sx[inside]]
    return out


# --------------------------------------------------------------------------- #
# Photometric ops (images in the 0..255 range, float32)
# --------------------------------------------------------------------------- #
def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB image, ``HxW`` (what PIL's ``convert('L')`` uses)."""
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _blend(base: Union[np.ndarray, np.float32], img: np.ndarray, factor: float,
           inplace: bool = False) -> np.ndarray:
    """``base + factor * (img - base)`` clipped to 0..255 (PIL ImageEnhance), float32.

    The same float32 operations in the same order as the plain expression
    (addition and multiplication are commutative in IEEE arithmetic), done in
    one buffer: bit-identical, without the temporaries. ``inplace=True``
    writes into ``img`` (a float32 array the caller owns).
    """
    if img.dtype != np.float32:  # e.g. float64 from a caller: computed in its precision
        return np.clip(base + factor * (img - base), 0.0, 255.0).astype(np.float32)
    out = np.subtract(img, base, out=img if inplace else None)
    np.multiply(out, np.float32(factor), out=out)
    np.add(out, base, out=out)
    return np.clip(out, 0.0, 255.0, out=out)


def adjust_brightness(img: np.ndarray, factor: float, inplace: bool = False) -> np.ndarray:
    """Scale intensities; 0 gives black, 1 the original.

    ``inplace=True`` may overwrite ``img`` (float32, owned by the caller).
    """
    if img.dtype != np.float32:
        return _blend(np.zeros_like(img), img, factor)
    # The blend with a black base: 0 + f * (x - 0) is f * x (up to the sign of a zero).
    out = np.multiply(img, np.float32(factor), out=img if inplace else None)
    return np.clip(out, 0.0, 255.0, out=out)


def adjust_contrast(img: np.ndarray, factor: float, inplace: bool = False) -> np.ndarray:
    """Blend with the mean grey level; 0 gives a flat grey image."""
    mean = float(_gray(img).mean()) if img.shape[2] == 3 else float(img.mean())
    if img.dtype != np.float32:
        return _blend(np.full_like(img, mean), img, factor)
    return _blend(np.float32(mean), img, factor, inplace)


def adjust_saturation(img: np.ndarray, factor: float, inplace: bool = False) -> np.ndarray:
    """Blend an RGB image with its greyscale version; 0 gives grey."""
    gray = _gray(img)
    if img.dtype == np.float32 and gray.size:
        # Same values as broadcasting gray[..., None], but numpy's HxWx3 - HxWx1
        # broadcast is ~4x slower than a contiguous 3-channel copy plus plain ops.
        return _blend(cv2.merge([gray, gray, gray]).reshape(img.shape), img, factor, inplace)
    return _blend(gray[..., None], img, factor, inplace)


def adjust_hue(img: np.ndarray, delta: float, inplace: bool = False) -> np.ndarray:
    """Rotate the hue of an RGB image by ``delta`` in PaddleSeg units.

    PaddleSeg adds ``delta`` to PIL's 8-bit hue channel, so a full turn is
    256 units; here the shift is done in OpenCV's float HSV (degrees).
    """
    x = np.clip(img, 0.0, 255.0, out=img if inplace and img.dtype == np.float32 else None)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    np.divide(x, np.float32(255.0), out=x)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    _shift_hue(hsv[..., 0], delta * 360.0 / 256.0)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.multiply(out, np.float32(255.0), out=out)


def _shift_hue(hue: np.ndarray, degrees: float) -> None:
    """``hue[...] = np.mod(hue + degrees, 360)`` in float32, in place.

    OpenCV's float hue lies in [0, 360], so for ``|degrees| < 360`` the sum
    is in (-360, 720) and float32 ``np.mod`` reduces to one exact ``- 360``
    above the range or one rounded ``+ 360`` below it (numpy's own fmod
    correction step): the same values in two cheap masked passes instead of
    the much slower general ``np.mod``.
    """
    np.add(hue, np.float32(degrees), out=hue)
    if abs(degrees) < 360.0:
        low, high = hue < 0, hue >= 360  # both from the sum, before either fix
        np.add(hue, np.float32(360.0), out=hue, where=low)
        np.subtract(hue, np.float32(360.0), out=hue, where=high)
    else:
        np.mod(hue, np.float32(360.0), out=hue)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def adjust_sharpness(img: np.ndarray, factor: float, inplace: bool = False) -> np.ndarray:
    """Blend with a smoothed copy (PIL's SMOOTH kernel); 0 blurs, >1 sharpens.

    Border pixels are kept as they are, like PIL.
    """
    smooth = _per_chunk(img, lambda c, s, e: cv2.filter2D(c, -1, _SMOOTH))
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]
    return _blend(smooth, img, factor, inplace)


def normalize(img: np.ndarray, mean: np.ndarray, std: np.ndarray,
              chw_buffer: bool = False, max_value: float = 255.0) -> np.ndarray:
    """``(img / max_value - mean) / std`` per channel, float32 (PaddleSeg's rule
    with ``max_value = 255``).

    Three float32 operations per element in this order, so the values equal,
    to the bit, those of the three steps run as separate array operations;
    here they are written into one output buffer. ``chw_buffer=True`` stores the result channel-first and
    returns the ``HxWxC`` view of it: same values, and the final CHW
    conversion in :class:`~paddleseg_ext.transforms.Compose` becomes free.
    """
    if img.dtype != np.float32:
        img = img.astype(np.float32)
    if chw_buffer and img.ndim == 3:
        out = np.empty((img.shape[2],) + img.shape[:2], np.float32)
        np.divide(img.transpose(2, 0, 1), np.float32(max_value), out=out)
        np.subtract(out, mean.astype(np.float32)[:, None, None], out=out)
        np.divide(out, std.astype(np.float32)[:, None, None], out=out)
        return out.transpose(1, 2, 0)
    out = np.divide(img, np.float32(max_value))
    np.subtract(out, mean.astype(np.float32), out=out)
    return np.divide(out, std.astype(np.float32), out=out)


# --------------------------------------------------------------------------- #
# Labels
# --------------------------------------------------------------------------- #
def mask_to_binary_edge(label: np.ndarray, radius: int = 2, ignore_index: int = 255) -> np.ndarray:
    """Binary edge map (``HxW`` int64, 1 on edges) of a label map.

    A pixel is an edge pixel when another class lies within ``radius`` pixels
    (square window). Ignored pixels never create edges themselves.
    """
    lab = label.astype(np.int64)
    k = 2 * radius + 1
    kernel = np.ones((k, k), np.uint8)
    # Replace ignored pixels by a neighbour-neutral value per pass: max-filter
    # treats them as -inf, min-filter as +inf.
    lo = np.where(lab == ignore_index, np.iinfo(np.int32).min, lab).astype(np.float32)
    hi = np.where(lab == ignore_index, np.iinfo(np.int32).max, lab).astype(np.float32)
    mx = cv2.dilate(lo, kernel, borderType=cv2.BORDER_REPLICATE)
    mn = cv2.erode(hi, kernel, borderType=cv2.BORDER_REPLICATE)
    valid = lab != ignore_index
    edge = valid & ((mx > lab) | (mn < lab))
    return edge.astype(np.int64)


def reverse_transform(arr: np.ndarray, trans_info: List[Tuple[str, Tuple[int, int]]],
                      mode: str = "nearest") -> np.ndarray:
    """Map a prediction back through recorded ``trans_info`` (newest first).

    ``('resize', (h, w))`` resizes back to ``(h, w)``; ``('padding', (h, w))``
    crops ``[:h, :w]``. ``mode`` is ``'nearest'`` (label/class maps) or
    ``'bilinear'`` (float score maps, ``HxW`` or ``HxWxC``).

    Raises:
        ValueError: unknown ``trans_info`` item or ``mode``.
    """
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"reverse_transform: mode must be 'nearest' or 'bilinear', got {mode!r}")
    for item in reversed(list(trans_info)):
        kind, (h, w) = item[0], item[1]
        h, w = int(h), int(w)
        if kind == "resize":
            arr = (resize_nearest(arr, (w, h)) if mode == "nearest"
                   else resize(arr.astype(np.float32), (w, h), cv2.INTER_LINEAR))
        elif kind == "padding":
            arr = arr[:h, :w]
        else:
            raise ValueError(
                f"reverse_transform: unknown trans_info item {item!r}; "
                f"allowed kinds are 'resize' and 'padding'")
    return arr


def ceil_to_multiple(value: int, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``value``."""
    return int(math.ceil(value / divisor) * divisor)
