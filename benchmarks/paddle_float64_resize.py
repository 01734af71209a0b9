"""Paddle 3.3.1's CPU bilinear resize in float64 computes its sampling positions in float32.

    python benchmarks/paddle_float64_resize.py        # .venv; in .venv-peers also torch's

Resizes a float64 ``[1, 2, 9, 13]`` map to 67x93 (ratios that are not dyadic fractions) and
compares with a float64 NumPy reference of the same rule (half-pixel centres clamped at 0, as
torch and Paddle; or corners aligned): ``F.interpolate`` is off by ~1e-6 (float32 positions),
``F.grid_sample`` given the same positions as a float64 grid agrees to ~1e-15, as does torch.
This is why the float64 peer comparisons run at sizes where every resize ratio is dyadic.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

SRC, OUT = (9, 13), (67, 93)


def positions(n: int, m: int, align_corners: bool) -> np.ndarray:
    """Source pixel position (float64) of each of ``m`` outputs along an axis of ``n`` inputs."""
    if align_corners:
        return np.arange(m) * ((n - 1) / (m - 1))
    return np.maximum((np.arange(m) + 0.5) * (n / m) - 0.5, 0)


def weights(n: int, m: int, align_corners: bool) -> np.ndarray:
    s = positions(n, m, align_corners)
    i0 = np.minimum(np.floor(s).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = np.zeros((m, n))
    w[np.arange(m), i0] += 1 - (s - i0)
    w[np.arange(m), i1] += s - i0
    return w


def main() -> None:
    x = np.random.default_rng(0).normal(size=(1, 2, *SRC))
    for ac in (False, True):
        want = np.einsum("hi,ncij,wj->nchw", weights(SRC[0], OUT[0], ac), x, weights(SRC[1], OUT[1], ac))
        got = F.interpolate(paddle.to_tensor(x), OUT, mode="bilinear", align_corners=ac).numpy()
        print(f"paddle interpolate float64, align_corners={ac}: max|diff| {np.abs(got - want).max():.2e}")
        # the same positions as a float64 grid in grid_sample's align_corners=False coordinates
        gy, gx = np.meshgrid(*((positions(n, m, ac) + 0.5) / n * 2 - 1 for n, m in zip(SRC, OUT)), indexing="ij")
        grid = paddle.to_tensor(np.stack([gx, gy], -1)[None])
        gs = F.grid_sample(paddle.to_tensor(x), grid, mode="bilinear", align_corners=False,
                           padding_mode="border").numpy()
        print(f"paddle grid_sample float64 (same positions):    max|diff| {np.abs(gs - want).max():.2e}")
        try:
            import torch
        except ImportError:
            continue
        t = torch.nn.functional.interpolate(torch.from_numpy(x), OUT, mode="bilinear", align_corners=ac).numpy()
        print(f"torch interpolate float64:                      max|diff| {np.abs(t - want).max():.2e}")


if __name__ == "__main__":
    main()
