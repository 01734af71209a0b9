"""Windowed reading and writing of georeferenced rasters (GeoTIFF and anything GDAL reads).

Reading and writing go through rasterio (GDAL). It was chosen over
tifffile + zarr by measurement (``benchmarks/scene_io.py``; docs/benchmarks.md):
1.5-9x faster windowed reads of striped and tiled TIFFs, and it writes what
keeps an output on the map (CRS, geotransform, no-data, colour table) in one
call each, for every format GDAL knows. GDAL's block cache is capped
(:data:`GDAL_CACHE_BYTES`) so memory stays bounded however large the scene.

No-data: a pixel is no-data where GDAL's dataset mask is 0 (the file's
no-data value in every band, an internal mask or an alpha band), and where a
floating-point band is NaN or infinite. Outputs mark those pixels with
:data:`NODATA_CLASS` (class map, uint8 probabilities), NaN (float16
probabilities) or alpha 0 (overlay).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..transforms.loading import IMAGE_DTYPES, prepare_image, prepare_image_lazy

Box = Tuple[int, int, int, int]  # row_off, col_off, height, width

NODATA_CLASS = 255  # class-map value of no-data pixels (so at most 255 classes, 0..254)
PROB_SCALE = 254  # uint8 probabilities: round(p * 254); 255 is no-data
PROB_DTYPES = ("uint8", "float16")
GDAL_CACHE_BYTES = 64 * 2 ** 20  # GDAL block cache per process (its default is 5 % of the RAM)
BLOCK = 256  # output tile size (pixels)


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - a requirement
        raise ImportError("scene inference reads and writes rasters with rasterio: pip install rasterio") from e
    return rasterio


def _open(path: str, mode: str = "r", **kw: Any) -> Any:
    """``rasterio.open`` without its NotGeoreferencedWarning: a plain TIFF without a
    CRS is a valid scene, and its outputs are then plain TIFFs too."""
    import warnings

    rio = _rasterio()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rio.errors.NotGeoreferencedWarning)
        return rio.open(path, mode, **kw)


def gdal_env() -> Any:
    """A ``rasterio.Env`` with a bounded block cache and no side files (.aux.xml)."""
    return _rasterio().Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_PAM_ENABLED="NO")


def box_text(box: Box) -> str:
    y, x, h, w = box
    return f"window rows {y}:{y + h}, cols {x}:{x + w}"


class SceneReader:
    """One raster opened for windowed reads.

    Args:
        path: the scene (GeoTIFF, tiled or striped TIFF, or another GDAL format).
        img_channels: bands the model takes; checked here with the toolkit's
            rule (3: 1, 3 or 4 bands accepted; otherwise exactly that many).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a readable raster, a pixel type the toolkit does not
            read, or a band count that does not fit ``img_channels`` (the
            message names the file).
    """

    def __init__(self, path: str, img_channels: int = 3) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"scene file not found: {path}")
        rio = _rasterio()
        self.path = path
        try:
            self.ds = _open(path)
        except rio.errors.RasterioIOError as e:
            raise ValueError(f"cannot open scene {path} as a raster: {e}") from None
        self.height, self.width, self.count = self.ds.height, self.ds.width, self.ds.count
        dtypes = set(self.ds.dtypes)
        if len(dtypes) != 1 or np.dtype(dtypes.pop()) not in IMAGE_DTYPES:
            self.close()
            allowed = ", ".join(str(d) for d in IMAGE_DTYPES)
            raise ValueError(f"scene {path} has band type(s) {', '.join(self.ds.dtypes)}; one type "
                             f"of {allowed} is needed")
        self.dtype = np.dtype(self.ds.dtypes[0])
        try:  # the band-count rule of read_image, on a 1-pixel stand-in
            prepare_image_lazy(np.zeros((1, 1, self.count), self.dtype), img_channels=img_channels, path=path)
        except ValueError:
            self.close()
            raise
        self._masked = any(f & (0x02 | 0x04 | 0x08) for f in self._mask_flags())

    def _mask_flags(self) -> List[int]:
        # GDAL mask flags per band: 0x01 all valid, 0x02 per-dataset, 0x04 alpha, 0x08 nodata.
        return [int(sum(int(f) for f in flags)) for flags in self.ds.mask_flag_enums]

    @property
    def profile(self) -> Dict[str, Any]:
        return {"crs": self.ds.crs, "transform": self.ds.transform, "height": self.height,
                "width": self.width}

    def _window(self, box: Box) -> Any:
        from rasterio.windows import Window

        y, x, h, w = box
        return Window(x, y, w, h)

    def read(self, box: Box) -> np.ndarray:
        """The pixels of ``box`` as stored, ``HxWxC``; non-finite float pixels read as 0.

        Raises:
            ValueError: the window cannot be read (the message names file and window).
        """
        img = self._read(box, lambda win: self.ds.read(window=win)).transpose(1, 2, 0)
        if img.dtype.kind == "f":
            img = np.where(np.isfinite(img), img, 0).astype(img.dtype)
        return img

    def valid(self, box: Box, out_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """``HxW`` bool: False on no-data pixels of ``box`` (see the module docstring);
        ``out_shape``: of ``box`` decimated to that size (nearest pixel)."""
        shape = out_shape or (box[2], box[3])
        ok = self._read(box, lambda win: self.ds.dataset_mask(window=win, out_shape=shape)) > 0 \
            if self._masked else np.ones(shape, bool)
        if self.dtype.kind == "f":
            ok &= np.isfinite(self._read(box, lambda win: self.ds.read(
                window=win, out_shape=(self.count,) + tuple(shape)))).all(axis=0)
        return ok

    def sample(self, max_side: int) -> Tuple[np.ndarray, np.ndarray]:
        """The whole scene decimated (nearest pixel) to at most ``max_side`` pixels a side:
        pixels ``HxWxC`` as :meth:`read` gives them, and :meth:`valid` of the same pixels.
        GDAL reads block by block, so memory is that of the sample, not of the scene."""
        step = max(1, -(-max(self.height, self.width) // max_side))
        shape = (-(-self.height // step), -(-self.width // step))
        full = (0, 0, self.height, self.width)
        img = self._read(full, lambda win: self.ds.read(window=win, out_shape=(self.count,) + shape))
        img = img.transpose(1, 2, 0)
        if img.dtype.kind == "f":
            img = np.where(np.isfinite(img), img, 0).astype(img.dtype)
        return img, self.valid(full, shape)

    def _read(self, box: Box, how: Any) -> np.ndarray:
        rio = _rasterio()
        try:
            return how(self._window(box))
        except (rio.errors.RasterioIOError, rio.errors.RasterioError) as e:
            raise ValueError(f"cannot read {box_text(box)} of scene {self.path}: {e}") from None

    def close(self) -> None:
        self.ds.close()

    def __enter__(self) -> "SceneReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def model_pixels(raw: np.ndarray, transforms: Any, path: str) -> np.ndarray:
    """Pixels as read (``HxWxC``, stored band order) converted exactly as :func:`read_image`
    converts a TIFF for the model (uint16 scaled to 0..255, bands for ``img_channels``)."""
    return prepare_image(raw, to_rgb=not getattr(transforms, "to_rgb", True),
                         img_channels=getattr(transforms, "img_channels", raw.shape[2]), path=path)


def colour_table(cmap: Sequence[int]) -> Dict[int, Tuple[int, int, int, int]]:
    """GDAL colour table from a flat ``[r, g, b, ...]`` palette; no-data transparent black."""
    table = {i: (int(cmap[3 * i]), int(cmap[3 * i + 1]), int(cmap[3 * i + 2]), 255)
             for i in range(min(len(cmap) // 3, 256))}
    table[NODATA_CLASS] = (0, 0, 0, 0)
    return table


def _create(path: str, profile: Dict[str, Any], count: int, dtype: str, nodata: Optional[float],
            extra: Optional[Dict[str, Any]] = None) -> Any:
    h, w = profile["height"], profile["width"]
    opts: Dict[str, Any] = dict(driver="GTiff", height=h, width=w, count=count, dtype=dtype, nodata=nodata,
                                crs=profile["crs"], transform=profile["transform"], compress="deflate",
                                BIGTIFF="IF_SAFER")
    if h >= BLOCK and w >= BLOCK:  # GDAL tiles must fit the image
        opts.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    opts.update(extra or {})
    return _open(path, "w", **opts)


class SceneWriter:
    """The outputs of one scene, written block by block to temporary names.

    ``<out>.tif``: one uint8 band of classes, the input's CRS and
    geotransform, a colour table, no-data :data:`NODATA_CLASS`.
    ``<out>_prob.tif`` (``probs`` given): one band per class, ``uint8``
    (``round(p * 254)``, no-data 255) or ``float16`` (no-data NaN).
    ``<out>_overlay.tif`` (``overlay``): RGB uint8 and an alpha band that is 0
    on no-data. :meth:`commit` renames the others first and the class map
    last, so an existing class map means a complete scene.

    Args:
        out_path: the class GeoTIFF's final path.
        profile: the input's ``crs``, ``transform``, ``height``, ``width``.
        cmap: flat RGB palette for the colour table.
        probs: None, ``"uint8"`` or ``"float16"``.
        num_classes: bands of the probability raster.
        overlay: also write the overlay.
    """

    def __init__(self, out_path: str, profile: Dict[str, Any], cmap: Sequence[int],
                 probs: Optional[str] = None, num_classes: int = 0, overlay: bool = False) -> None:
        if probs not in (None,) + PROB_DTYPES:
            raise ValueError(f"probabilities must be one of {', '.join(PROB_DTYPES)}, got {probs!r}")
        self.out_path = out_path
        self.prob_path = prob_path(out_path) if probs else None
        self.overlay_path = overlay_path(out_path) if overlay else None
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        self._tmp = {p: tmp_path(p) for p in (self.prob_path, self.overlay_path, out_path) if p}
        self.cls = _create(self._tmp[out_path], profile, 1, "uint8", NODATA_CLASS)
        self.cls.write_colormap(1, colour_table(cmap))
        self.probs, self.prob = probs, None
        if probs:
            # GDAL 3.10's GTiff stores half floats as Float32 bands with NBITS=16.
            dtype, nodata, extra = ("uint8", 255, None) if probs == "uint8" else ("float32", float("nan"),
                                                                                   {"NBITS": 16})
            self.prob = _create(self._tmp[self.prob_path], profile, num_classes, dtype, nodata, extra)
        self.overlay = None
        if overlay:
            self.overlay = _create(self._tmp[self.overlay_path], profile, 4, "uint8", None,
                                   {"photometric": "RGB", "ALPHA": "YES"})

    def write(self, box: Box, classes: np.ndarray, valid: np.ndarray, prob: Optional[np.ndarray] = None,
              rgb: Optional[np.ndarray] = None) -> None:
        """Write one block: ``classes [h, w]``, ``valid [h, w]`` bool, ``prob [K, h, w]`` float,
        ``rgb [h, w, 3]`` uint8 (the overlay)."""
        from rasterio.windows import Window

        y, x, h, w = box
        win = Window(x, y, w, h)
        self.cls.write(np.where(valid, classes, NODATA_CLASS).astype(np.uint8)[None], window=win)
        if self.overlay is not None:
            if rgb is None:
                raise ValueError("this writer stores an overlay; pass rgb")
            alpha = np.where(valid, 255, 0).astype(np.uint8)
            self.overlay.write(np.concatenate([rgb.transpose(2, 0, 1), alpha[None]]), window=win)
        if self.prob is not None:
            if prob is None:
                raise ValueError("this writer stores probabilities; pass prob")
            if self.probs == "uint8":
                p = np.where(valid[None], np.rint(prob * PROB_SCALE), 255).astype(np.uint8)
            else:
                p = np.where(valid[None], prob, np.nan).astype(np.float16).astype(np.float32)
            self.prob.write(p, window=win)

    def commit(self) -> None:
        """Close the files and move them to their final names (probabilities first)."""
        self.close()
        for final, tmp in self._tmp.items():
            os.replace(tmp, final)

    def close(self) -> None:
        for ds in (self.prob, self.overlay, self.cls):
            if ds is not None and not ds.closed:
                ds.close()

    def discard(self) -> None:
        """Close and delete the temporary files (a failed scene)."""
        self.close()
        for tmp in self._tmp.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def prob_path(out_path: str) -> str:
    root, ext = os.path.splitext(out_path)
    return f"{root}_prob{ext}"


def overlay_path(out_path: str) -> str:
    root, ext = os.path.splitext(out_path)
    return f"{root}_overlay{ext}"


def tmp_path(path: str) -> str:
    """A per-process temporary name beside ``path`` (GDAL picks the driver from the
    creation call, not the extension)."""
    return f"{path}.{os.getpid()}.part"
