"""Scenes of any size: windowed reading, prediction, blending and GeoTIFF writing.

- :mod:`.windows`: the sliding-window grid and its output blocks;
- :mod:`.raster`: windowed raster reading / GeoTIFF writing (rasterio);
- :mod:`.blend`: one scene, window by window, through a predict function;
- :mod:`.overlay`: the class colours over a band composite, stretched alike over the scene;
- :mod:`.run`: many scenes, sharded over processes, resumable; the CLI options.
"""

from .blend import OUTPUTS, predict_scene
from .raster import NODATA_CLASS, PROB_DTYPES, SceneReader, SceneWriter
from .run import SceneReport, add_scene_args, dygraph_predict_fn, predict_scenes, scene_kwargs, shard
from .windows import WindowPlan

__all__ = ["OUTPUTS", "predict_scene", "NODATA_CLASS", "PROB_DTYPES", "SceneReader", "SceneWriter",
           "SceneReport", "add_scene_args", "dygraph_predict_fn", "predict_scenes", "scene_kwargs", "shard",
           "WindowPlan"]
