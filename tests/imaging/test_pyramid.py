import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile

from imaging.imageio import DisplayWindow
from imaging.pyramid import write_dzi
from imaging.tiles import TILE_NAME


def test_dzi_levels_tiles_and_master_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(1000, 60000, size=(700, 1000), dtype=np.uint16)
    folder = write_dzi(image, tmp_path / "p", window=DisplayWindow(1000, 60000), pixel_size_nm=32.5)
    root = ET.parse(folder / "mosaic.dzi").getroot()
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert (int(size.get("Width")), int(size.get("Height"))) == (1000, 700)
    assert root.get("TileSize") == "254" and root.get("Overlap") == "1"
    top = max(int(p.name) for p in (folder / "mosaic_files").iterdir() if p.is_dir())
    assert top == int(np.ceil(np.log2(1000)))  # levels down to one pixel
    assert (folder / "mosaic_files" / "0" / "0_0.jpeg").exists()
    for tile in (folder / "mosaic_files" / str(top)).iterdir():
        assert TILE_NAME.match(f"mosaic_files/{top}/{tile.name}")
    with tifffile.TiffFile(folder / "mosaic.tif") as tif:
        page = tif.pages[0]
        assert page.dtype == np.uint16 and page.shape == (700, 1000)
        x_resolution = page.tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1e7 / 32.5, rel=1e-3)  # pixels per cm
        assert len(tif.series[0].levels) > 1


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "p").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        write_dzi(np.zeros((10, 10), np.uint16), tmp_path / "p", window=DisplayWindow(0, 1), pixel_size_nm=1)


@pytest.mark.parametrize("name", ["../x.dzi", "mosaic_files/../../secret", "mosaic_files/1/0_0.jpeg/..", "/etc/passwd",
                                  "mosaic_files/1/a_b.jpeg"])
def test_tile_names_outside_the_pyramid_are_refused(name):
    assert not TILE_NAME.match(name)


def test_tile_path_validation_and_display_window(tmp_path):
    from imaging.imageio import DisplayWindow as Window
    from imaging.pyramid import TilePathError, read_dzi, tile_path

    image = np.linspace(0, 1, 300 * 520, dtype=np.float32).reshape(300, 520)
    folder = write_dzi(image, tmp_path / "f", window=Window(0.1, 0.9), pixel_size_nm=10.0)
    info = read_dzi(folder)
    assert (info.width, info.height, info.levels) == (520, 300, 11)
    assert info.window == Window(0.1, 0.9) and info.pixel_size_nm == 10.0
    top = info.levels - 1
    assert info.tile_count(top) == (3, 2)
    good = tile_path(info, f"mosaic_files/{top}/2_1.jpeg")
    assert good.exists() and good == (folder / "mosaic_files" / str(top) / "2_1.jpeg").resolve()
    assert tile_path(info, "0/0_0.jpeg").exists()
    for bad in ["../mosaic.dzi", f"{top}/../../x.jpeg", f"/{top}/0_0.jpeg", f"{top}/0_0.png", f"{top}/3_0.jpeg",
                "11/0_0.jpeg", f"{top}\\0_0.jpeg", f"mosaic_files/{top}/0_0.jpeg/..", "0/0_0.jpeg\x00"]:
        with pytest.raises(TilePathError):
            tile_path(info, bad)


def test_master_tiff_pixel_size_is_read_back_by_sem_import(tmp_path):
    from imaging.pyramid import write_pyramidal_tiff
    from imaging.sem_import import import_sem

    image = np.random.default_rng(1).integers(0, 65535, size=(300, 400), dtype=np.uint16)
    path = write_pyramidal_tiff(image, tmp_path / "m.tif", pixel_size_nm=42.0)
    result = import_sem(path, data_bar=False)
    assert result.pixel_size_nm == pytest.approx(42.0, rel=1e-4)
    assert np.array_equal(np.round(result.image * 65535).astype(np.uint16), image)
