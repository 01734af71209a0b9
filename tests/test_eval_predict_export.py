import os

import cv2
import numpy as np
import paddle
import pytest
from PIL import Image

from paddleseg_ext.core import evaluate, export, inference, predict, reverse_transform
from paddleseg_ext.core.infer import aug_inference, slide_inference
from paddleseg_ext.cvlibs import Config, SegBuilder
from paddleseg_ext.utils.infer_options import InferOptions
from paddleseg_ext.transforms import Compose
from tiny_config import NUM_CLASSES, write_tiny_config
import tolerance as tol


class Const(paddle.nn.Layer):
    """A 'model' whose logits are a fixed function of the input, for exact checks."""

    def __init__(self, k=3):
        super().__init__()
        self.k = k

    def forward(self, x):
        return [paddle.concat([x[:, :1] * (i + 1) for i in range(self.k)], axis=1)]


def test_reverse_transform_undoes_resize_and_padding():
    x = paddle.arange(2 * 6 * 8, dtype="float32").reshape([1, 2, 6, 8])
    info = [("resize", (3, 4)), ("padding", (6, 7))]
    out = reverse_transform(x, info)
    assert out.shape == [1, 2, 3, 4]
    np.testing.assert_allclose(reverse_transform(x[:, :, :, :7], [("padding", (6, 7))]).numpy(),
                               x[:, :, :, :7].numpy())
    with pytest.raises(ValueError, match="Unknown trans_info op 'rotate'"):
        reverse_transform(x, [("rotate", (1, 1))])


def test_slide_with_one_full_window_equals_plain():
    model = Const()
    im = paddle.rand([1, 1, 20, 30])
    np.testing.assert_allclose(slide_inference(model, im, (30, 20), (10, 10)).numpy(), model(im)[0].numpy())
    # overlapping windows of a position-independent model average to the same values
    np.testing.assert_allclose(slide_inference(model, im, (12, 8), (5, 5)).numpy(), model(im)[0].numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="needs crop_size and stride"):
        inference(model, im, is_slide=True)


def test_aug_inference_flips_back():
    model = Const()
    im = paddle.rand([1, 1, 8, 10])
    plain = paddle.nn.functional.softmax(model(im)[0], axis=1).numpy()
    aug = aug_inference(model, im, scales=1.0, flip_horizontal=True, flip_vertical=True).numpy()
    np.testing.assert_allclose(aug, plain, rtol=1e-5, atol=1e-6)
    assert aug_inference(model, im, [("resize", (4, 5))], scales=[0.5, 1.5]).shape == [1, 3, 4, 5]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    path, root = write_tiny_config(tmp, size=(40, 24))
    b = SegBuilder(Config(path))
    return path, root, b


def test_evaluate_plain_aug_slide(tiny):
    _, _, b = tiny
    plain = evaluate(b.model, b.val_dataset, progress=False)
    assert plain["images"] == 2 and len(plain["class_IoU"]) == NUM_CLASSES
    assert sum(plain["class_pixels"]) > 0
    aug = evaluate(b.model, b.val_dataset, InferOptions(aug_eval=True, scales=[0.75, 1.0], flip_horizontal=True),
                   progress=False)
    slide = evaluate(b.model, b.val_dataset, InferOptions(is_slide=True, crop_size=(24, 16), stride=(16, 8)),
                     progress=False)
    for m in (aug, slide):
        assert 0.0 <= m["mIoU"] <= 1.0 and m["class_pixels"] == plain["class_pixels"]


def test_predict_writes_colour_maps_and_overlays(tiny, tmp_path):
    _, root, b = tiny
    src = tmp_path / "in"
    (src / "sub dir").mkdir(parents=True)
    img = (np.random.rand(24, 40, 3) * 255).astype(np.uint8)
    cv2.imwrite(str(src / "a.png"), img)
    cv2.imwrite(str(src / "sub dir" / "b.jpg"), img)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    written = predict(b.model, Compose(b.val_transforms), str(src), str(out))
    assert len(written) == 2
    color = Image.open(out / "pseudo_color_prediction" / "sub dir" / "b.png")
    assert color.mode == "P" and color.size == (40, 24)
    assert np.asarray(color).max() < NUM_CLASSES
    overlay = cv2.imread(str(out / "added_prediction" / "a.jpg"))
    assert overlay.shape[0] >= 24 and overlay.shape[1] > 40  # a legend to the right of the 40-pixel image
    with pytest.raises(FileNotFoundError, match="nothere"):
        predict(b.model, Compose(b.val_transforms), str(tmp_path / "nothere"), str(out))


def test_export_and_paddle_inference_match_dygraph(tiny, tmp_path):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "deploy", "python"))
    from infer import DeployConfig, Predictor

    path, root, b = tiny
    model = b.model
    model.eval()
    cfg = Config(path)
    export(model, str(tmp_path / "exp"), cfg.dic["val_dataset"]["transforms"], output_op="none")
    dcfg = DeployConfig(str(tmp_path / "exp" / "deploy.yaml"))
    assert dcfg.custom_ops == []
    pred = Predictor(dcfg, "cpu", cpu_threads=1)
    for shape in ((1, 3, 24, 40), (2, 3, 33, 17)):  # dynamic batch and spatial size
        x = np.random.rand(*shape).astype("float32")
        ref = model(paddle.to_tensor(x))[0].numpy()
        got = pred.run(x)
        tol.assert_close(got, ref, tol.network_bound(model, ref), f"Paddle Inference vs dygraph {shape}")
