"""The libspng fast path for PNGs gives exactly the OpenCV path's arrays, and only
takes the files it is known to decode identically."""

import cv2
import numpy as np
import pytest
from PIL import Image

from paddleseg_ext.transforms import loading

pytest.importorskip("pyspng")


def _png(arr, path):
    assert cv2.imwrite(str(path), arr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    return str(path)


def _cv2_only(monkeypatch):
    monkeypatch.setattr(loading, "_pyspng", None)


def _count_spng_calls(monkeypatch):
    calls = []
    real = loading._pyspng.load

    def load(data, *a, **k):
        calls.append(len(data))
        return real(data, *a, **k)

    monkeypatch.setattr(loading._pyspng, "load", load)
    return calls


RNG = np.random.default_rng(7)
CASES = {
    "gray8": RNG.integers(0, 256, (13, 17), dtype=np.uint8),
    "bgr8": RNG.integers(0, 256, (13, 17, 3), dtype=np.uint8),
    "bgra8": RNG.integers(0, 256, (13, 17, 4), dtype=np.uint8),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("to_rgb", [True, False])
def test_fast_path_equals_opencv_path(tmp_path, monkeypatch, name, to_rgb):
    path = _png(CASES[name], tmp_path / f"{name}.png")
    calls = _count_spng_calls(monkeypatch)
    fast = loading.read_image(path, to_rgb=to_rgb, img_channels=3)
    assert len(calls) == 1  # the fast path really ran
    with monkeypatch.context() as m:
        _cv2_only(m)
        ref = loading.read_image(path, to_rgb=to_rgb, img_channels=3)
    assert fast.dtype == ref.dtype == np.float32 and fast.shape == ref.shape
    np.testing.assert_array_equal(fast, ref)


def test_fast_path_keeps_opencv_order_for_other_channel_counts(tmp_path, monkeypatch):
    # img_channels=4 keeps the file's channels as OpenCV orders them (BGRA).
    path = _png(CASES["bgra8"], tmp_path / "four.png")
    fast = loading.read_image(path, img_channels=4)
    np.testing.assert_array_equal(fast, CASES["bgra8"].astype(np.float32))


def test_fast_path_labels_equal_opencv(tmp_path, monkeypatch):
    lab = RNG.integers(0, 19, (21, 11), dtype=np.uint8)
    lab[:3] = 255
    path = _png(lab, tmp_path / "lab.png")
    calls = _count_spng_calls(monkeypatch)
    got = loading.read_label(path)
    assert len(calls) == 1
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, lab)


def _pil_png(arr, path, **save):
    Image.fromarray(arr).save(str(path), format="PNG", **save)
    return str(path)


def test_files_libspng_would_read_differently_take_the_opencv_path(tmp_path, monkeypatch):
    rgb = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    files = {
        "16-bit": _png(RNG.integers(0, 65536, (9, 7, 3), dtype=np.uint16), tmp_path / "a.png"),
        "16-bit grey": _png(RNG.integers(0, 65536, (9, 7), dtype=np.uint16), tmp_path / "b.png"),
        "tRNS": _pil_png(rgb, tmp_path / "c.png", transparency=(1, 2, 3)),
        "palette": str(tmp_path / "d.png"),
        "grey+alpha": _pil_png(np.dstack([rgb[:, :, 0], rgb[:, :, 1]]), tmp_path / "e.png"),
    }
    Image.fromarray(rgb).convert("P").save(files["palette"], format="PNG")  # colour type 3
    calls = _count_spng_calls(monkeypatch)
    for name, path in files.items():
        buf = np.fromfile(path, np.uint8)
        assert not loading._spng_compatible(buf), name
        fast = loading.read_image(path, img_channels=4 if name == "tRNS" else 3)
        with monkeypatch.context() as m:
            _cv2_only(m)
            ref = loading.read_image(path, img_channels=4 if name == "tRNS" else 3)
        np.testing.assert_array_equal(fast, ref, err_msg=name)
    assert calls == []


def test_interlaced_header_is_not_taken(tmp_path):
    path = _png(CASES["bgr8"], tmp_path / "x.png")
    buf = np.fromfile(path, np.uint8)
    assert loading._spng_compatible(buf)
    buf = buf.copy()
    buf[28] = 1  # IHDR interlace method: Adam7
    assert not loading._spng_compatible(buf)


def test_broken_png_still_gets_the_clear_message(tmp_path, monkeypatch):
    path = _png(CASES["bgr8"], tmp_path / "ok.png")
    data = open(path, "rb").read()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="starts like a PNG file but is truncated or corrupt"):
        loading.read_image(str(bad))
    # a header that claims more than the file holds never loops or crashes the walk
    assert not loading._spng_compatible(np.frombuffer(data[:40], np.uint8))


def test_without_pyspng_everything_still_reads(tmp_path, monkeypatch):
    _cv2_only(monkeypatch)
    path = _png(CASES["bgr8"], tmp_path / "x.png")
    np.testing.assert_array_equal(loading.read_image(path, to_rgb=False),
                                  CASES["bgr8"].astype(np.float32))
