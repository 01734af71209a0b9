"""PointRend point geometry: sampling, uncertainty, point selection, scatter."""

import numpy as np
import paddle
import pytest

from paddleseg_ext.models.layers.point_geometry import (most_uncertain_points, point_sample,
                                                        point_sample_nearest, sample_training_points,
                                                        scatter_points, uncertainty)
import tolerance as tol


def bilinear_ref(feats, points):
    """numpy grid_sample(bilinear, border padding, align_corners=False) at [0, 1] points."""
    n, c, h, w = feats.shape
    out = np.zeros((n, c, points.shape[1]), dtype=np.float64)
    for b in range(n):
        for p, (x, y) in enumerate(points[b]):
            # continuous pixel coordinates (centres at integers), clamped: border padding
            px = min(max(x * w - 0.5, 0.0), w - 1.0)
            py = min(max(y * h - 0.5, 0.0), h - 1.0)
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            for yy, wy in ((y0, 1 - (py - y0)), (min(y0 + 1, h - 1), py - y0)):
                for xx, wx in ((x0, 1 - (px - x0)), (min(x0 + 1, w - 1), px - x0)):
                    out[b, :, p] += wy * wx * feats[b, :, yy, xx]
    return out


def test_point_sample_matches_numpy_bilinear():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2, 3, 5, 7)).astype("float32")
    pts = rng.uniform(0, 1, size=(2, 40, 2)).astype("float32")
    pts[:, :4] = [[0.0, 0.0], [1.0, 1.0], [0.02, 0.97], [0.5, 0.5]]  # corners/edges: border
    got = point_sample(paddle.to_tensor(feats), paddle.to_tensor(pts)).numpy()
    assert got.shape == (2, 3, 40)
    want = bilinear_ref(feats, pts)
    # Four weighted corners (the weights computed from the coordinates), against numpy.
    tol.assert_close(got, want, tol.bound(max(1.0, np.abs(want).max()), 4, depth=2), "bilinear")


def test_point_sample_edges_keep_border_values():
    # A constant map reads the same constant up to the very edge (no fade to 0).
    feats = paddle.full([1, 2, 3, 4], 5.0)
    pts = paddle.to_tensor([[[0.0, 0.0], [1.0, 1.0], [1.0, 0.5], [0.01, 0.99]]])
    np.testing.assert_allclose(point_sample(feats, pts).numpy(), 5.0, rtol=1e-6)


def test_point_sample_at_pixel_centres_is_exact():
    feats = paddle.arange(2 * 4 * 6, dtype="float32").reshape([1, 2, 4, 6])
    ii, jj = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
    pts = np.stack([(jj.ravel() + 0.5) / 6, (ii.ravel() + 0.5) / 4], -1)[None].astype("float32")
    got = point_sample(feats, paddle.to_tensor(pts)).numpy()
    np.testing.assert_allclose(got, feats.numpy().reshape(1, 2, -1), atol=1e-5)


def test_point_sample_nearest_reads_exact_labels():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 9, size=(2, 5, 7)).astype("int64")
    pts = rng.uniform(0, 1, size=(2, 30, 2)).astype("float32")
    pts[0, :3] = [[1.0, 1.0], [0.0, 0.0], [0.9999, 0.2]]  # far edge reads the last pixel
    got = point_sample_nearest(paddle.to_tensor(label), paddle.to_tensor(pts)).numpy()
    cols = np.minimum(np.floor(pts[..., 0] * 7), 6).astype(int)
    rows = np.minimum(np.floor(pts[..., 1] * 5), 4).astype(int)
    expected = np.stack([label[b, rows[b], cols[b]] for b in range(2)])
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0] == label[0, 4, 6] and got[0, 1] == label[0, 0, 0]


def test_uncertainty_is_minus_top1_minus_top2():
    logits = paddle.to_tensor([[[3.0, 0.0]], [[1.0, 0.1]], [[2.5, -1.0]]]).transpose([1, 0, 2])
    # [N=1, K=3, P=2]: point 0 top1 3.0 top2 2.5; point 1 top1 0.1 top2 0.0
    np.testing.assert_allclose(uncertainty(logits).numpy(), [[[-0.5, -0.1]]], atol=1e-6)


def test_most_uncertain_points_picks_the_ties_and_their_centres():
    h, w = 4, 5
    logits = np.zeros((2, 3, h, w), dtype="float32")
    logits[:, 0] = 4.0  # confident class 0 everywhere ...
    ties = {0: [(1, 2), (3, 4)], 1: [(0, 0), (2, 1)]}
    for b, cells in ties.items():
        for i, j in cells:
            logits[b, 0, i, j], logits[b, 1, i, j] = 1.0, 1.0  # ... except exact top-2 ties
    logits[0, 2, 0, 1], logits[0, 0, 0, 1] = 3.5, 4.0  # a near tie ranks third in image 0
    idx, pts = most_uncertain_points(paddle.to_tensor(logits), 3)
    assert idx.shape == [2, 3] and pts.shape == [2, 3, 2]
    assert set(idx.numpy()[0, :2]) == {1 * w + 2, 3 * w + 4} and idx.numpy()[0, 2] == 1
    assert set(idx.numpy()[1, :2]) == {0, 2 * w + 1}
    for b in range(2):
        for k, flat in enumerate(idx.numpy()[b]):
            i, j = divmod(int(flat), w)
            np.testing.assert_allclose(pts.numpy()[b, k], [(j + 0.5) / w, (i + 0.5) / h], atol=1e-6)


def test_most_uncertain_points_capped_at_grid_size():
    idx, pts = most_uncertain_points(paddle.randn([1, 4, 3, 2]), 8196)
    assert idx.shape == [1, 6] and pts.shape == [1, 6, 2]
    assert sorted(idx.numpy()[0].tolist()) == list(range(6))


def test_scatter_points_changes_only_the_given_cells_per_image():
    logits = paddle.randn([2, 3, 4, 5])
    idx = paddle.to_tensor([[0, 7, 19], [3, 4, 12]], dtype="int64")
    values = paddle.full([2, 3, 3], 100.0)
    out = scatter_points(logits, idx, values).numpy()
    ref = logits.numpy().reshape(2, 3, -1).copy()
    for b in range(2):
        ref[b][:, idx.numpy()[b]] = 100.0
    np.testing.assert_array_equal(out.reshape(2, 3, -1), ref)


def test_training_points_favour_uncertain_regions():
    # 2 classes on an 8x8 grid, exactly tied in columns 0-1 (x < 0.25), confident elsewhere.
    logits = np.zeros((2, 2, 8, 8), dtype="float32")
    logits[:, 0, :, 2:] = 5.0
    paddle.seed(3)
    pts = sample_training_points(paddle.to_tensor(logits), 200, 3, 0.75).numpy()
    assert pts.shape == (2, 200, 2) and pts.min() >= 0.0 and pts.max() < 1.0
    # importance points: tied region, or the bilinear blend up to the next centre (x < 0.3125)
    assert (pts[:, :150, 0] < 0.3125).all()
    assert 0.3 < pts[:, 150:, 0].mean() < 0.7  # the 50 random ones are uniform
    uniform = sample_training_points(paddle.to_tensor(logits), 64, 3, 0.0).numpy()
    assert uniform.shape == (2, 64, 2)


def test_bad_points_shape():
    with pytest.raises(ValueError, match=r"points must be \[N, P, 2\]"):
        point_sample(paddle.zeros([1, 1, 2, 2]), paddle.zeros([1, 3]))
