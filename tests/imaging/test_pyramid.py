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
