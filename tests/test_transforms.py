"""Tests of paddleseg_ext.transforms: alignment, label values, trans_info,
dtypes, determinism and error messages."""

import os
import random
import sys

import cv2
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synthetic as S  # noqa: E402

import paddleseg_ext  # noqa: E402,F401  (registers everything)
from paddleseg_ext.cvlibs import ConfigError, manager  # noqa: E402
from paddleseg_ext import transforms as T  # noqa: E402
from paddleseg_ext.transforms import functional as F  # noqa: E402

N_CLASSES = 5
COLORS = np.array([S.class_color(c) for c in range(N_CLASSES)], np.float32)
PAD_RGB = (10.0, 20.0, 30.0)  # distinct from every class colour


def make_sample(h=40, w=56, seed=0):
    """Train-mode data dict whose image is the flat class colour of its label."""
    rng = np.random.default_rng(seed)
    label = S.random_label(rng, (w, h), N_CLASSES, n_shapes=4)
    img = COLORS[label].astype(np.float32)
    return {"img": img, "label": label, "gt_fields": ["label"], "trans_info": []}


def decode(img, label_pad=255):
    """Label recovered from image colours (nearest class colour, or pad)."""
    cands = np.concatenate([COLORS, np.array([PAD_RGB], np.float32)])
    d = ((img[:, :, None, :] - cands[None, None]) ** 2).sum(-1)
    out = d.argmin(-1)
    out[out == N_CLASSES] = label_pad
    return out


def agreement(data):
    lab = data["label"]
    return float((decode(data["img"]) == lab).mean())


def seed_all(s):
    np.random.seed(s)
    random.seed(s)


ALL_NAMES = ["Compose", "Resize", "ResizeByLong", "ResizeByShort", "ResizeStepScaling",
             "ResizeRangeScaling", "RandomPaddingCrop", "RandomHorizontalFlip",
             "RandomVerticalFlip", "RandomDistort", "RandomBlur", "RandomRotation",
             "Normalize", "Padding"]


def test_all_registered():
    for name in ALL_NAMES:
        assert name in manager.TRANSFORMS, name
        assert manager.TRANSFORMS.get(name) is getattr(T, name)


# --------------------------------------------------------------------------- #
# Geometry: alignment, label values, trans_info
# --------------------------------------------------------------------------- #
GEOMETRIC = [
    T.Resize(target_size=(30, 70)),
    T.Resize(target_size=(128, 64), keep_ratio=True, size_divisor=32),
    T.ResizeByLong(long_size=90),
    T.ResizeByShort(short_size=20),
    T.ResizeStepScaling(0.5, 2.0, 0.25),
    T.ResizeRangeScaling(30, 100),
    T.RandomPaddingCrop(crop_size=(64, 48), im_padding_value=list(PAD_RGB)),
    T.RandomPaddingCrop(crop_size=(24, 16), category_max_ratio=0.75),
    T.RandomHorizontalFlip(prob=1.0),
    T.RandomVerticalFlip(prob=1.0),
    T.RandomRotation(max_rotation=30, im_padding_value=list(PAD_RGB)),
    T.Padding(target_size=(64, 64), im_padding_value=list(PAD_RGB)),
]


@pytest.mark.parametrize("op", GEOMETRIC, ids=lambda o: repr(o)[:40])
def test_geometric_alignment_and_values(op):
    for seed in range(3):
        seed_all(seed)
        data = make_sample(seed=seed)
        before = set(np.unique(data["label"]).tolist())
        out = op(data)
        img, lab = out["img"], out["label"]
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
        assert lab.shape == img.shape[:2]
        assert set(np.unique(lab).tolist()) <= before | {255}
        # Interpolation blends colours only along class borders.
        assert agreement(out) > 0.93, (op, agreement(out))


@pytest.mark.parametrize("op", [o for o in GEOMETRIC if "Resize" in type(o).__name__],
                         ids=lambda o: repr(o)[:40])
def test_label_resize_samples_nearest_pixel_centre(op):
    # Label = index of each source pixel; every output pixel must come from
    # the source pixel whose centre is nearest to its own mapped centre (the
    # geometry of the bilinear image resize), ties either way.
    for seed in range(3):
        seed_all(seed)
        H, W = 40, 56
        idx = np.arange(H * W, dtype=np.int64).reshape(H, W)
        data = {"img": np.zeros((H, W, 3), np.float32), "label": idx, "gt_fields": ["label"],
                "trans_info": []}
        out = op(data)["label"]
        h, w = out.shape
        sy, sx = np.divmod(out, W)
        cy = (np.arange(h)[:, None] + 0.5) * H / h - 0.5
        cx = (np.arange(w)[None, :] + 0.5) * W / w - 0.5
        assert np.abs(sy - cy).max() <= 0.5 + 1e-9 and np.abs(sx - cx).max() <= 0.5 + 1e-9


def test_flips_are_exact():
    data = make_sample()
    img, lab = data["img"].copy(), data["label"].copy()
    out = T.RandomHorizontalFlip(prob=1.0)(data)
    np.testing.assert_array_equal(out["img"], img[:, ::-1])
    np.testing.assert_array_equal(out["label"], lab[:, ::-1])
    out = T.RandomVerticalFlip(prob=1.0)(out)
    np.testing.assert_array_equal(out["label"], lab[::-1, ::-1])
    data = make_sample()
    assert np.array_equal(T.RandomHorizontalFlip(prob=0.0)(data)["label"], lab)


def test_resize_sizes():
    d = T.Resize(target_size=(30, 70))(make_sample(40, 56))
    assert d["img"].shape[:2] == (70, 30)  # target_size is (w, h)
    d = T.Resize(target_size=(2048, 512), keep_ratio=True)(make_sample(40, 56))
    assert d["img"].shape[:2] == (512, 717)  # short side bound: 40 * 12.8
    d = T.Resize(target_size=(100, 100), keep_ratio=True, size_divisor=32)(make_sample(40, 56))
    assert d["img"].shape[:2] == (96, 128)  # 71x100 rounded up to multiples of 32
    # A half rounds up, as in mmcv: mmseg's Cityscapes 769x769 test size of a 2048x1024 image.
    from paddleseg_ext.transforms.functional import rescale_size

    assert rescale_size((2048, 1024), (2049, 1025)) == (2049, 1025)
    d = T.ResizeByLong(long_size=112)(make_sample(40, 56))
    assert d["img"].shape[:2] == (80, 112)
    d = T.ResizeByShort(short_size=20)(make_sample(40, 56))
    assert d["img"].shape[:2] == (20, 28)
    seed_all(1)
    for _ in range(5):
        d = T.ResizeStepScaling(0.5, 2.0, 0.25)(make_sample(40, 56))
        assert d["img"].shape[0] / 40 in {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
        d = T.ResizeRangeScaling(30, 100)(make_sample(40, 56))
        assert 30 <= max(d["img"].shape[:2]) <= 100


def test_trans_info_recorded_and_reversible():
    data = make_sample(20, 30)
    orig = data["label"].copy()
    out = T.Compose([T.Resize(target_size=(60, 40)), T.Padding(target_size=(64, 48)),
                     T.Normalize()])(data)
    assert out["trans_info"] == [("resize", (20, 30)), ("padding", (40, 60))]
    assert out["label"].shape == (48, 64)
    assert (out["label"][40:, :] == 255).all() and (out["label"][:, 60:] == 255).all()
    back = F.reverse_transform(out["label"], out["trans_info"])
    np.testing.assert_array_equal(back, orig)  # x2 then /2 nearest is exact
    # Resize by long / short also record the previous size.
    for op in (T.ResizeByLong(77), T.ResizeByShort(13), T.ResizeStepScaling(1.5, 1.5)):
        d = op(make_sample(20, 30))
        assert d["trans_info"] == [("resize", (20, 30))]
        assert F.reverse_transform(d["label"], d["trans_info"]).shape == (20, 30)
    # Bilinear reverse for score maps keeps channels.
    scores = np.zeros((48, 64, 3), np.float32)
    assert F.reverse_transform(scores, out["trans_info"], "bilinear").shape == (20, 30, 3)
    # Random train-only ops do not record anything.
    for op in (T.RandomPaddingCrop((16, 16)), T.RandomRotation(10),
               T.RandomHorizontalFlip(1.0)):
        assert op(make_sample())["trans_info"] == []
    with pytest.raises(ValueError, match="unknown trans_info item"):
        F.reverse_transform(orig, [("flip", (1, 1))])


def test_padding_values_and_small_image_crop():
    data = make_sample(10, 12)
    out = T.RandomPaddingCrop(crop_size=(20, 16), im_padding_value=[1, 2, 3],
                              label_padding_value=254)(data)
    assert out["img"].shape == (16, 20, 3)
    np.testing.assert_array_equal(out["img"][12:, :], np.broadcast_to([1, 2, 3], (4, 20, 3)))
    assert (out["label"][10:, :] == 254).all() and (out["label"][:, 12:] == 254).all()


def test_category_max_ratio_retries():
    # A label that is 90 % class 0: with ratio 0.75 the crop should usually
    # land on the mixed corner.
    lab = np.zeros((60, 60), np.uint8)
    lab[:20, :20] = 1
    hits = 0
    for s in range(20):
        seed_all(s)
        d = {"img": COLORS[lab].copy(), "label": lab.copy(), "gt_fields": ["label"],
             "trans_info": []}
        out = T.RandomPaddingCrop((20, 20), category_max_ratio=0.75)(d)
        hits += len(np.unique(out["label"])) > 1
    assert hits >= 15


def test_val_mode_label_untouched():
    data = make_sample()
    data["gt_fields"] = []
    lab = data["label"].copy()
    out = T.Compose([T.Resize((30, 30)), T.Normalize()])(data)
    assert out["img"].shape == (3, 30, 30)
    np.testing.assert_array_equal(out["label"], lab)
    assert out["label"].dtype == np.int64


def test_rotation_grows_canvas_and_fills():
    seed_all(0)
    out = T.RandomRotation(max_rotation=45, im_padding_value=list(PAD_RGB))(make_sample(40, 40))
    assert out["img"].shape[0] > 40
    assert out["label"][0, 0] == 255 and np.allclose(out["img"][0, 0], PAD_RGB)
    assert T.RandomRotation(max_rotation=0)(make_sample())["img"].shape == (40, 56, 3)


def test_multichannel_geometry():
    img = np.random.default_rng(0).uniform(0, 255, (20, 24, 6)).astype(np.float32)
    d = {"img": img, "label": np.zeros((20, 24), np.uint8), "gt_fields": ["label"],
         "trans_info": []}
    ops = T.Compose([T.Resize((12, 10)), T.RandomRotation(20), T.Padding((40, 40)),
                     T.RandomDistort(brightness_prob=1, contrast_prob=1, saturation_prob=1),
                     T.RandomBlur(prob=1), T.Normalize([0.5] * 6, [0.5] * 6)],
                    img_channels=6)
    out = ops(d)
    assert out["img"].shape == (6, 40, 40) and out["label"].shape == (40, 40)


# --------------------------------------------------------------------------- #
# Photometric
# --------------------------------------------------------------------------- #
def test_distort_range_and_gray_invariance():
    seed_all(0)
    data = make_sample()
    lab = data["label"].copy()
    op = T.RandomDistort(brightness_prob=1, contrast_prob=1, saturation_prob=1, hue_prob=1,
                         sharpness_prob=1)
    out = op(data)
    assert out["img"].dtype == np.float32 and out["img"].shape == (40, 56, 3)
    assert out["img"].min() >= 0 and out["img"].max() <= 255
    np.testing.assert_array_equal(out["label"], lab)
    # Hue and saturation keep a grey image grey.
    gray = {"img": np.full((8, 8, 3), 100.0, np.float32)}
    g = T.RandomDistort(brightness_prob=0, contrast_prob=0, saturation_prob=1, hue_prob=1)(gray)
    np.testing.assert_allclose(g["img"], 100.0, atol=1e-3)


def test_distort_factors():
    img = np.full((4, 4, 3), 100.0, np.float32)
    np.testing.assert_allclose(F.adjust_brightness(img, 1.5), 150.0)
    img2 = img.copy()
    img2[0, 0] = 200.0
    c = F.adjust_contrast(img2, 0.0)
    assert np.allclose(c, c[0, 0])  # zero contrast: flat
    hue = F.adjust_hue(np.array([[[255.0, 0.0, 0.0]]], np.float32), 256 / 3)  # +120 deg
    np.testing.assert_allclose(hue[0, 0], [0, 255, 0], atol=1e-2)


def test_blur():
    data = make_sample()
    img = data["img"].copy()
    assert np.array_equal(T.RandomBlur(prob=0)(data)["img"], img)
    for kind in ("gaussian", "median", "blur", "random"):
        seed_all(0)
        out = T.RandomBlur(prob=1, blur_type=kind)({"img": img.copy()})
        assert out["img"].shape == img.shape and out["img"].dtype == np.float32
        assert not np.array_equal(out["img"], img)


def test_normalize():
    out = T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])(
        {"img": np.full((2, 2, 3), 255.0, np.float32)})
    np.testing.assert_allclose(out["img"], 1.0)
    with pytest.raises(ValueError, match="mean/std have 3 values but the image .*4 channels"):
        T.Normalize()({"img": np.zeros((2, 2, 4), np.float32), "img_path": "x.tif"})
    with pytest.raises(ValueError, match="mean has 2 values but std has 3"):
        T.Normalize(mean=[0.1, 0.2], std=[1, 1, 1])
    with pytest.raises(ValueError, match="std must not contain 0"):
        T.Normalize(std=[1, 0, 1])


# --------------------------------------------------------------------------- #
# Determinism
# --------------------------------------------------------------------------- #
def _pipeline():
    return T.Compose([T.ResizeStepScaling(0.5, 2.0, 0.25), T.RandomPaddingCrop((32, 32)),
                      T.RandomHorizontalFlip(), T.RandomVerticalFlip(0.5),
                      T.RandomRotation(15), T.RandomDistort(), T.RandomBlur(0.5),
                      T.Normalize()])


def test_deterministic_under_seed():
    outs = []
    for _ in range(2):
        seed_all(123)
        outs.append([_pipeline()(make_sample(seed=i)) for i in range(4)])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a["img"], b["img"])
        np.testing.assert_array_equal(a["label"], b["label"])
    seed_all(124)
    other = [_pipeline()(make_sample(seed=i)) for i in range(4)]
    assert any(not np.array_equal(a["img"], b["img"]) for a, b in zip(outs[0], other))


# --------------------------------------------------------------------------- #
# Compose: reading files, dtypes, errors
# --------------------------------------------------------------------------- #
def test_compose_reads_files_and_outputs_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    lab = S.random_label(rng, (20, 16), N_CLASSES)
    rgb = S.image_from_label(rng, lab)
    ip = S.write_image(tmp_path / "im.png", rgb)
    lp = S.write_label(tmp_path / "lab.png", lab)
    out = T.Compose([T.RandomHorizontalFlip(prob=0)])({"img": ip, "label": lp})
    assert out["img"].shape == (3, 16, 20) and out["img"].dtype == np.float32
    assert out["label"].shape == (16, 20) and out["label"].dtype == np.int64
    np.testing.assert_array_equal(out["img"].transpose(1, 2, 0), rgb)  # BGR -> RGB
    np.testing.assert_array_equal(out["label"], lab)
    assert out["img_path"] == ip and out["label_path"] == lp
    bgr = T.Compose([], to_rgb=False)({"img": ip})["img"].transpose(1, 2, 0)
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])


def test_compose_channel_handling(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    p = str(tmp_path / "g.png")
    cv2.imencode(".png", gray)[1].tofile(p)
    out = T.Compose([])({"img": p})["img"]
    assert out.shape == (3, 3, 4) and np.array_equal(out[0], out[2])
    out1 = T.Compose([], img_channels=1)({"img": p})["img"]
    assert out1.shape == (1, 3, 4)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    rgba[..., 3] = 50
    p4 = str(tmp_path / "a.png")
    cv2.imencode(".png", rgba)[1].tofile(p4)
    out = T.Compose([])({"img": p4})["img"]
    assert out.shape == (3, 3, 4) and out[0].max() == 200 and out[2].max() == 0
    assert T.Compose([], img_channels=4)({"img": p4})["img"].shape == (4, 3, 4)
    u16 = np.full((3, 4, 3), 65535, np.uint16)
    p16 = str(tmp_path / "u16.png")
    cv2.imencode(".png", u16)[1].tofile(p16)
    np.testing.assert_allclose(T.Compose([])({"img": p16})["img"], 255.0, rtol=1e-5)
    with pytest.raises(ValueError, match="has 3 channels but img_channels=5"):
        T.Compose([], img_channels=5)({"img": p16})


def test_compose_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found: .*nope.png"):
        T.Compose([])({"img": str(tmp_path / "nope.png")})
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="cannot decode image file .*bad.png"):
        T.Compose([])({"img": str(bad)})
    ip = S.write_image(tmp_path / "im.png", np.zeros((10, 12, 3), np.uint8))
    lp = S.write_label(tmp_path / "lab.png", np.zeros((10, 13), np.uint8))
    with pytest.raises(ValueError, match=r"sizes differ: image .*im.png is 10x12 .* "
                                         r"label .*lab.png is 10x13"):
        T.Compose([])({"img": ip, "label": lp})
    rgb_label = np.zeros((10, 12, 3), np.uint8)
    rgb_label[..., 0] = 128
    rp = S.write_image(tmp_path / "rgb_label.png", rgb_label)
    with pytest.raises(ValueError, match="RGB colour image .*index/grayscale PNG is expected"):
        T.Compose([])({"img": ip, "label": rp})
    with pytest.raises(ConfigError, match=r"transforms\[0\] is an unbuilt config dict"):
        T.Compose([{"type": "Normalize"}])
    with pytest.raises(ConfigError, match="must be a list"):
        T.Compose(T.Normalize())


def test_palette_and_gray_rgb_labels(tmp_path):
    lab = np.array([[0, 3, 255], [7, 7, 1]], np.uint8)
    pp = S.write_label(tmp_path / "pal.png", lab, palette=True)
    np.testing.assert_array_equal(T.read_label(pp), lab)
    gp = S.write_image(tmp_path / "grayrgb.png", np.repeat(lab[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(T.read_label(gp), lab)


@pytest.mark.parametrize("ctor,msg", [
    (lambda: T.Resize(target_size=[512]), r"Resize: target_size must be .* got \[512\]"),
    (lambda: T.Resize(interp="BICUBIC"), "Resize: interp must be one of"),
    (lambda: T.RandomHorizontalFlip(prob=1.5), r"prob must be a number in \[0, 1\], got 1.5"),
    (lambda: T.ResizeStepScaling(2.0, 0.5), "min_scale_factor .* must not exceed"),
    (lambda: T.ResizeRangeScaling(600, 400), "min_value .* must not exceed"),
    (lambda: T.RandomPaddingCrop(crop_size=(0, 5)), "crop_size must be a positive int"),
    (lambda: T.RandomBlur(blur_type="motion"), "blur_type must be one of"),
    (lambda: T.RandomDistort(hue_prob=-1), "hue_prob must be a number in"),
    (lambda: T.Padding(target_size=(8, 8), im_padding_value="grey"), "im_padding_value must"),
])
def test_constructor_errors(ctor, msg):
    with pytest.raises(ValueError, match=msg):
        ctor()


def test_padding_smaller_target_errors():
    with pytest.raises(ValueError, match=r"Padding: image size \(w=56, h=40\) .*larger than "
                                         r"target_size \(w=32, h=32\)"):
        T.Padding(target_size=32)(make_sample())
    with pytest.raises(ValueError, match="im_padding_value has 2 values .* 3 channels"):
        T.Padding(target_size=64, im_padding_value=[1, 2])(make_sample())


def test_edge_map():
    lab = np.zeros((10, 10), np.uint8)
    lab[:, 5:] = 1
    lab[0, 0] = 255
    e = F.mask_to_binary_edge(lab, radius=1)
    assert e.dtype == np.int64
    assert e[:, 4:6].all() and not e[:, :3].any() and not e[:, 7:].any()


def test_repr_is_readable():
    assert repr(T.Resize((64, 32))) == ("Resize(target_size=(64, 32), keep_ratio=False, "
                                        "size_divisor=None, interp='LINEAR')")
    assert "Compose([Normalize(" in repr(T.Compose([T.Normalize()]))


# --------------------------------------------------------------------------- #
# Fast paths against straightforward references
# --------------------------------------------------------------------------- #
def _window_tolerance(src):
    """Documented bound of F.resize_window vs resize-then-crop: half a float32
    ulp of each source coordinate (<= 2**-24 * max(h, w) px) per axis, times the
    largest intensity step between neighbouring source pixels."""
    s = src.astype(np.float64)
    step = max(np.abs(np.diff(s, axis=0)).max(initial=0), np.abs(np.diff(s, axis=1)).max(initial=0))
    return 2 * 2.0 ** -24 * max(src.shape[:2]) * step + 1e-4


def _random_window(rng, dh, dw):
    h, w = int(rng.integers(1, dh + 1)), int(rng.integers(1, dw + 1))
    return int(rng.integers(dh - h + 1)), int(rng.integers(dw - w + 1)), h, w


def test_resize_nearest_matches_fancy_index():
    rng = np.random.default_rng(0)
    for _ in range(60):
        H, W = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        shape = (H, W) + tuple(int(c) for c in rng.integers(1, 4, int(rng.integers(0, 2))))
        arr = rng.integers(-300, 300, shape).astype(rng.choice([np.uint8, np.int64, np.int32]))
        w, h = int(rng.integers(1, 150)), int(rng.integers(1, 150))
        ys = np.minimum(((np.arange(h) + 0.5) * (H / h)).astype(np.int64), H - 1)
        xs = np.minimum(((np.arange(w) + 0.5) * (W / w)).astype(np.int64), W - 1)
        ref = arr[ys[:, None], xs[None, :]]
        out = F.resize_nearest(arr, (w, h))
        assert out.dtype == arr.dtype
        np.testing.assert_array_equal(out, ref)
        top, left, wh, ww = _random_window(rng, h, w)
        np.testing.assert_array_equal(F.resize_nearest_window(arr, (w, h), top, left, wh, ww),
                                      ref[top:top + wh, left:left + ww])


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6])
def test_resize_window_matches_resize_then_crop(channels):
    rng = np.random.default_rng(channels)
    for it in range(40):
        H, W = int(rng.integers(2, 160)), int(rng.integers(2, 160))
        if it % 4 == 0:  # sizes with a short period (the fast case)
            H, W = int(rng.choice([64, 96, 128])), int(rng.choice([64, 128, 256]))
        s = float(rng.choice([0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 0.6, 2.5]))
        dw, dh = max(1, round(W * s)), max(1, round(H * s))
        img = rng.uniform(0, 255, (H, W, channels)).astype(np.float32)
        top, left, h, w = _random_window(rng, dh, dw)
        ref = F.resize(img, (dw, dh))[top:top + h, left:left + w]
        out = F.resize_window(img, (dw, dh), top, left, h, w)
        assert out.shape == ref.shape and out.dtype == np.float32
        diff = float(np.abs(out - ref).max())
        assert diff <= _window_tolerance(img), (H, W, s, diff)
        if channels in (1, 3, 4) and cv2.ipp.useIPP():
            assert diff == 0, (H, W, s, diff)  # exact on OpenCV's IPP path
        for interp in (cv2.INTER_NEAREST, cv2.INTER_CUBIC):
            np.testing.assert_array_equal(
                F.resize_window(img, (dw, dh), top, left, h, w, interp),
                F.resize(img, (dw, dh), interp)[top:top + h, left:left + w])


def test_resize_window_full_size_image_tolerance():
    # Cityscapes-sized uniform noise (the worst case: the largest neighbour steps).
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (1024, 2048, 6)).astype(np.float32)
    for s in (0.75, 1.25, 1.75):
        dw, dh = round(2048 * s), round(1024 * s)
        top, left = int(rng.integers(dh - 512 + 1)), int(rng.integers(dw - 1024 + 1))
        ref = cv2.resize(img, (dw, dh))[top:top + 512, left:left + 1024]
        diff = np.abs(F.resize_window(img, (dw, dh), top, left, 512, 1024) - ref).max()
        assert diff <= 0.05 and diff <= _window_tolerance(img), (s, diff)


def _unfused(transforms, data, channels):
    """What Compose does, but running every transform on its own (no fusion)."""
    data = T.Compose([], img_channels=channels).load(data)
    for t in transforms:
        data = t(data)
    data["img"] = np.ascontiguousarray(data["img"].transpose(2, 0, 1), dtype=np.float32)
    for key in set(data["gt_fields"]) | {"label"}:
        data[key] = data[key].astype(np.int64)
    return data


def _fusion_cases():
    rng = np.random.default_rng(7)
    for it in range(60):
        channels = int(rng.choice([3, 3, 1, 4, 6]))
        H, W = int(rng.integers(8, 120)), int(rng.integers(8, 120))
        if it % 3 == 0:
            H, W = int(rng.choice([32, 64])), int(rng.choice([64, 128]))
        crop = (int(rng.integers(4, 100)), int(rng.integers(4, 100)))
        lo = float(rng.choice([0.5, 0.75, 1.0]))
        scaling = T.ResizeStepScaling(lo, lo + float(rng.choice([0, 0.5, 1.0])), 0.25)
        pad = [float(v) for v in rng.uniform(0, 255, channels)]
        cropper = T.RandomPaddingCrop(crop, im_padding_value=pad,
                                      label_padding_value=int(rng.choice([255, 1000])),
                                      category_max_ratio=float(rng.choice([1.0, 0.6])))
        img = rng.uniform(0, 255, (H, W, channels)).astype(np.float32)
        label = rng.integers(0, 4, (H, W)).astype(np.uint8)
        label[: H // 3] = 0
        edge = rng.integers(0, 3, (H, W)).astype(np.int32)
        yield it, scaling, cropper, img, label, edge


def test_fused_resize_crop_matches_two_steps():
    for it, scaling, cropper, img, label, edge in _fusion_cases():
        outs = []
        for fused in (True, False):
            seed_all(it)
            d = {"img": img.copy(), "label": label.copy(), "edge": edge.copy(),
                 "gt_fields": ["label", "edge"], "trans_info": []}
            out = (T.Compose([scaling, cropper], img_channels=img.shape[2])(d) if fused
                   else _unfused([scaling, cropper], d, img.shape[2]))
            outs.append((out, np.random.randint(1 << 30), random.random()))
        (fused, *draws_a), (ref, *draws_b) = outs
        assert draws_a == draws_b  # same draws: seeded runs and resumes reproduce
        assert fused["trans_info"] == ref["trans_info"]
        assert fused["img"].shape == ref["img"].shape
        diff = float(np.abs(fused["img"] - ref["img"]).max())
        assert diff <= _window_tolerance(img), (it, diff)
        if img.shape[2] in (1, 3, 4) and cv2.ipp.useIPP():
            assert diff == 0, (it, diff)  # exact on OpenCV's IPP path
        for key in ("label", "edge"):
            assert fused[key].dtype == ref[key].dtype
            np.testing.assert_array_equal(fused[key], ref[key])


def test_fused_first_step_converts_only_its_window(tmp_path):
    # Images read as uint8/uint16 (files and arrays) are converted to float32 only
    # where the fused resize + crop needs them: same values as converting first.
    rng = np.random.default_rng(3)
    for it in range(12):
        H, W = int(rng.integers(20, 70)), int(rng.integers(20, 90))
        dtype = np.uint16 if it % 3 == 2 else np.uint8
        raw = rng.integers(0, np.iinfo(dtype).max + 1, (H, W, 3)).astype(dtype)
        label = rng.integers(0, 4, (H, W)).astype(np.uint8)
        src = raw
        if it % 2:
            src = str(tmp_path / f"im{it}.png")
            cv2.imwrite(src, raw)
        tfs = [T.ResizeStepScaling(0.5, 2.0, 0.25), T.RandomPaddingCrop((32, 24))]
        outs = []
        for fused in (True, False):
            seed_all(it)
            d = {"img": src, "label": label.copy(), "gt_fields": ["label"], "trans_info": []}
            outs.append(T.Compose(tfs)(d) if fused else _unfused(tfs, d, 3))
        diff = float(np.abs(outs[0]["img"] - outs[1]["img"]).max())
        assert outs[0]["img"].dtype == np.float32
        from paddleseg_ext.transforms.loading import prepare_image
        assert diff <= _window_tolerance(prepare_image(raw)), diff
        if cv2.ipp.useIPP():
            assert diff == 0
        np.testing.assert_array_equal(outs[0]["label"], outs[1]["label"])


def test_fused_resize_crop_keeps_padding_and_label_dtype():
    # Scaled image smaller than the crop: padded bottom/right with the same values,
    # and a uint8 label is widened only when the padding value needs it.
    img = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(np.float32)
    for lv, dtype in ((255, np.uint8), (1000, np.int64)):
        crop = T.RandomPaddingCrop((40, 30), im_padding_value=[1.0, 2.0, 3.0],
                                   label_padding_value=lv)
        d = {"img": img.copy(), "label": np.zeros((20, 30), np.uint8), "gt_fields": ["label"],
             "trans_info": []}
        out = crop.resize_and_crop(d, (36, 24))
        assert out["img"].shape == (30, 40, 3) and out["label"].dtype == dtype
        np.testing.assert_array_equal(out["img"][24:], np.broadcast_to([1.0, 2.0, 3.0], (6, 40, 3)))
        np.testing.assert_array_equal(out["img"][:24, :36], cv2.resize(img, (36, 24)))
        assert (out["label"][24:] == lv).all() and (out["label"][:, 36:] == lv).all()
        assert (out["label"][:24, :36] == 0).all()


def test_fused_pair_applies_only_to_plain_adjacent_pair():
    from paddleseg_ext.transforms.geometric import fused_pair

    rss, rpc = T.ResizeStepScaling(0.5, 2.0), T.RandomPaddingCrop((16, 16))
    assert fused_pair(rss, rpc) is not None
    assert fused_pair(rpc, rss) is None and fused_pair(rss, T.Normalize()) is None

    class MyCrop(T.RandomPaddingCrop):
        def __call__(self, data):  # an override must run as written, not be fused away
            data["seen"] = True
            return super().__call__(data)

    assert fused_pair(rss, MyCrop((16, 16))) is None
    out = T.Compose([rss, MyCrop((16, 16))])(make_sample())
    assert out["seen"] and out["img"].shape == (3, 16, 16)


def test_fused_pair_standalone_transforms_unchanged():
    # Used alone, ResizeStepScaling still resizes the whole image with cv2.resize.
    seed_all(3)
    data = make_sample(40, 56)
    img = data["img"].copy()
    out = T.ResizeStepScaling(1.5, 1.5)(data)
    np.testing.assert_array_equal(out["img"], cv2.resize(img, (84, 60)))


def _ref_flip(arr, axis):
    return np.ascontiguousarray(arr[:, ::-1] if axis == 1 else arr[::-1])


def test_flips_match_numpy_for_all_dtypes():
    rng = np.random.default_rng(0)
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64, np.float16,
               np.float32, np.float64, np.bool_):
        for shape in ((7, 9), (7, 9, 1), (7, 9, 3), (7, 9, 6), (1, 5), (0, 4)):
            arr = (rng.uniform(-100, 100, shape) > 0 if dt == np.bool_
                   else rng.uniform(-100, 100, shape).astype(dt))
            for view in (arr, arr[:, 1:] if arr.shape[1] > 1 else arr):
                for fn, axis in ((F.horizontal_flip, 1), (F.vertical_flip, 0)):
                    out = fn(view)
                    assert out.dtype == view.dtype and out.flags.c_contiguous
                    np.testing.assert_array_equal(out, _ref_flip(view, axis))


# Straightforward forms of the photometric ops (what the fast versions must equal).
def _ref_gray(img):
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _ref_blend(base, img, factor):
    return np.clip(base + factor * (img - base), 0.0, 255.0).astype(np.float32)


def _ref_ops():
    def hue(img, delta):
        x = np.clip(img, 0.0, 255.0).astype(np.float32) / 255.0
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + delta * 360.0 / 256.0, 360.0)
        return (cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0).astype(np.float32)

    def sharp(img, f):
        smooth = F._per_chunk(img, lambda c, s, e: cv2.filter2D(c, -1, F._SMOOTH))
        smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = img[0], img[-1], img[:, 0], img[:, -1]
        return _ref_blend(smooth, img, f)

    return {
        "brightness": lambda img, f: _ref_blend(np.zeros_like(img), img, f),
        "contrast": lambda img, f: _ref_blend(np.full_like(img, float(
            _ref_gray(img).mean()) if img.shape[2] == 3 else float(img.mean())), img, f),
        "saturation": lambda img, f: _ref_blend(
            np.broadcast_to(_ref_gray(img)[..., None], img.shape), img, f),
        "hue": hue,
        "sharpness": sharp,
    }


def test_photometric_ops_match_reference():
    rng = np.random.default_rng(0)
    refs = _ref_ops()
    for it in range(40):
        channels = 3 if it % 4 else int(rng.choice([1, 4, 6]))
        img = rng.uniform(-20, 280, (int(rng.integers(3, 40)), int(rng.integers(3, 40)),
                                     channels)).astype(np.float32)
        if it % 5 == 0:
            img = np.clip(np.round(img), 0, 255)  # integral, in range: like decoded images
        for name, ref_fn in refs.items():
            if channels != 3 and name in ("saturation", "hue", "sharpness"):
                continue
            arg = float(rng.uniform(-40, 40)) if name == "hue" else float(rng.uniform(0, 2))
            ref = ref_fn(img, arg)
            fn = getattr(F, "adjust_" + name)
            keep = img.copy()
            np.testing.assert_array_equal(fn(img, arg), ref, err_msg=name)
            np.testing.assert_array_equal(img, keep, err_msg=f"{name} changed its input")
            np.testing.assert_array_equal(fn(img.copy(), arg, inplace=True), ref, err_msg=name)
            img64 = img.astype(np.float64)
            np.testing.assert_array_equal(fn(img64, arg), ref_fn(img64, arg), err_msg=name)


def test_hue_shift_wraps_like_np_mod():
    # Values at and around the wrap points, for shifts of both signs and a full turn.
    base = np.array([0.0, 1e-6, 0.5, 10.0, 180.0, 349.99997, 359.9999, 359.99997, 360.0],
                    np.float32)
    for degrees in (0.0, 1e-5, -1e-5, 10.0, -10.0, 25.3125, -25.3125, 359.0, -359.0, 400.0,
                    -725.0):
        hue = base.copy()
        F._shift_hue(hue, degrees)
        np.testing.assert_array_equal(hue, np.mod(base + np.float32(degrees), np.float32(360.0)))


def test_random_distort_leaves_input_alone_and_matches_reference():
    rng = np.random.default_rng(1)
    refs = _ref_ops()
    op = T.RandomDistort(brightness_prob=0.7, contrast_prob=0.7, saturation_prob=0.7,
                         hue_prob=0.7, sharpness_prob=0.7)
    for seed in range(12):
        img = rng.uniform(0, 255, (20, 30, 3)).astype(np.float32)
        keep = img.copy()
        seed_all(seed)
        out = op({"img": img})["img"]
        np.testing.assert_array_equal(img, keep)
        # Replay the same draws through the reference ops.
        seed_all(seed)
        ops = ["brightness", "contrast", "saturation", "hue", "sharpness"]
        random.shuffle(ops)
        ref = img
        for name in ops:
            if np.random.uniform(0, 1) >= getattr(op, f"{name}_prob"):
                continue
            rng_ = getattr(op, f"{name}_range")
            arg = (float(np.random.uniform(-rng_, rng_)) if name == "hue"
                   else op._factor(rng_))
            ref = refs[name](ref, arg)
        np.testing.assert_array_equal(out, ref)


def test_normalize_channel_first_buffer():
    rng = np.random.default_rng(0)
    for channels in (1, 3, 6):
        img = rng.uniform(0, 255, (9, 13, channels)).astype(np.float32)
        mean = rng.uniform(0, 1, channels).astype(np.float32)
        std = rng.uniform(0.1, 2, channels).astype(np.float32)
        ref = img.astype(np.float32) / np.float32(255.0)
        ref -= mean
        ref /= std
        for chw in (False, True):
            np.testing.assert_array_equal(F.normalize(img, mean, std, chw_buffer=chw), ref)
        m, sd = [float(v) for v in mean], [float(v) for v in std]
        out = T.Normalize(m, sd)({"img": img})["img"]
        assert out.shape == img.shape and out.transpose(2, 0, 1).flags.c_contiguous
        composed = T.Compose([T.Normalize(m, sd)],
                             img_channels=channels)({"img": img.copy()})["img"]
        assert composed.flags.c_contiguous
        np.testing.assert_array_equal(composed, ref.transpose(2, 0, 1))


def test_prepare_image_matches_reference():
    from paddleseg_ext.transforms.loading import prepare_image

    def ref(img, to_rgb, bgr_input):
        if img.ndim == 2:
            img = img[:, :, None]
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        elif img.shape[2] == 4:
            img = img[:, :, :3]
        if to_rgb and bgr_input:
            img = img[:, :, ::-1]
        if img.dtype == np.uint16:
            img = img.astype(np.float32) * np.float32(255.0 / 65535.0)
        return np.ascontiguousarray(img, dtype=np.float32)

    rng = np.random.default_rng(0)
    for dt in (np.uint8, np.uint16, np.float32):
        for shape in ((5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4), (0, 3, 3)):
            img = rng.integers(0, 256 if dt == np.uint8 else 65536, shape).astype(dt)
            for to_rgb in (True, False):
                for bgr in (True, False):
                    out = prepare_image(img, to_rgb, 3, None, bgr)
                    assert out.dtype == np.float32 and out.flags.c_contiguous
                    np.testing.assert_array_equal(out, ref(img, to_rgb, bgr))
