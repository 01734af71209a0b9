"""Pictures that say what they show: legends, and no-data pixels never coloured as a class."""

import os

import cv2
import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

from paddleseg_ext.core import predict
from paddleseg_ext.transforms import Compose, Normalize
from paddleseg_ext.utils.visualize import NO_DATA, get_color_map_list, nodata_mask, palette_array
from paddleseg_ext.utils.visualize_legend import legend_image
from paddleseg_ext.utils.visualize_outputs import (LEGEND_FILE, class_names_of, deploy_picture_keys,
                                                   write_color_maps)

RED_GREEN_BLUE = [255, 0, 0, 0, 255, 0, 0, 0, 255]


class SignOfFirstBand(paddle.nn.Layer):
    """Logits from the first band: class 2 where it is above the mean, else class 0."""

    num_classes = 3

    def forward(self, x):
        return [paddle.concat([x[:, :1] * (i + 1) for i in range(3)], axis=1)]


def scene(tmp_path):
    """A 3-band picture whose left 10 columns hold no data (0 in every band); a pixel with
    one band at 0 is valid data."""
    img = np.full((20, 30, 3), 200, np.uint8)
    img[:, 20:] = 40
    img[:, :10] = 0
    img[5, 15] = (0, 200, 200)
    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, img)
    return path, img


def test_nodata_is_where_every_band_holds_it():
    img = np.array([[[0, 0], [0, 3]], [[np.nan, np.nan], [1, 1]]], np.float32)
    assert nodata_mask(img, 0).tolist() == [[True, False], [False, False]]
    assert nodata_mask(img, float("nan")).tolist() == [[False, False], [True, False]]
    assert nodata_mask(img, None) is None


def test_predict_leaves_nodata_uncoloured_and_draws_legends(tmp_path):
    path, img = scene(tmp_path)
    out = tmp_path / "out"
    names = ["water", "field", "town"]
    transforms = Compose([Normalize()])
    predict(SignOfFirstBand(), transforms, path, str(out), custom_color=RED_GREEN_BLUE, class_names=names,
            nodata=0)
    color = Image.open(out / "pseudo_color_prediction" / "scene.png")
    ids = np.asarray(color)
    # no-data pixels: the no-data id, transparent in the palette; never a class
    assert (ids[:, :10] == NO_DATA).all() and color.info.get("transparency") == NO_DATA
    assert (ids[:, 10:20] == 2).all() and (ids[:, 20:] == 0).all() and ids[5, 15] == 2
    overlay = cv2.cvtColor(cv2.imread(str(out / "added_prediction" / "scene.jpg")), cv2.COLOR_BGR2RGB)
    # the no-data strip stays the (black) image; the valid pixels are blended with their class colour
    assert np.abs(overlay[:20, :9].astype(int)).max() <= 12
    assert overlay[10, 25, 0] > 100 and overlay[10, 15, 2] > 100
    # a legend to the right of the overlay (the classes shown and the no-data entry), and legend.png
    assert overlay.shape[1] > 30
    legend = legend_image(names, palette_array(get_color_map_list(256, RED_GREEN_BLUE)), [0, 2], no_data=True)
    assert overlay.shape[1] == 30 + legend.shape[1] and overlay.shape[0] == max(20, legend.shape[0])
    assert (overlay[:legend.shape[0], 30:].astype(int) - legend).__abs__().mean() < 8  # JPEG noise only
    assert os.path.isfile(out / "pseudo_color_prediction" / LEGEND_FILE)

    # without nodata the border is coloured as a class (what the option prevents)
    predict(SignOfFirstBand(), transforms, path, str(tmp_path / "plain"), legend=False)
    plain = np.asarray(Image.open(tmp_path / "plain" / "pseudo_color_prediction" / "scene.png"))
    assert (plain[:, :10] == 0).all()
    assert not os.path.exists(tmp_path / "plain" / "pseudo_color_prediction" / LEGEND_FILE)
    assert cv2.imread(str(tmp_path / "plain" / "added_prediction" / "scene.jpg")).shape == (20, 30, 3)


def test_deploy_colour_maps_mark_nodata_and_write_a_legend(tmp_path):
    path, img = scene(tmp_path)
    pred = np.ones((20, 30), np.int32)
    cmap = get_color_map_list(256)
    (out,) = write_color_maps([(path, pred)], str(tmp_path / "d"), lambda p: "x", cmap,
                              class_names=["a", "b"], nodata=0, img_channels=3)
    ids = np.asarray(Image.open(out))
    assert (ids[:, :10] == NO_DATA).all() and (ids[:, 10:] == 1).all()
    assert ids[5, 15] == 1  # one band at 0 is still data
    legend = cv2.imread(str(tmp_path / "d" / LEGEND_FILE))
    assert legend is not None and legend.shape[0] > 3 * 10


def test_class_names_and_nodata_reach_deploy_yaml():
    cfg = {"val_dataset": {"type": "LandCover"}, "test_config": {"nodata": 0}}
    keys = deploy_picture_keys(cfg)
    assert keys["nodata"] == 0 and keys["class_names"][:2] == ["developed", "agriculture"]
    assert class_names_of({"val_dataset": {"type": "Dataset", "class_names": ["x", "y"]}}) == ["x", "y"]
    assert deploy_picture_keys({"val_dataset": {"type": "Dataset"}}) == {}
    assert yaml.safe_load(yaml.safe_dump({"Deploy": keys}))["Deploy"] == keys


def test_a_bad_nodata_in_test_config_is_one_clear_error(tmp_path):
    from paddleseg_ext.cvlibs import Config, ConfigError

    path = tmp_path / "c.yml"
    path.write_text("test_config: {nodata: zero}\n")
    with pytest.raises(ConfigError, match=r"test_config.nodata in .*c.yml must be a number"):
        Config(str(path))
