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


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".tif"}


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_file_variant_writes_the_same_pyramid_as_the_array_one(tmp_path, dtype):
    from imaging.imageio import read_image16
    from imaging.pyramid import write_dzi_file

    rng = np.random.default_rng(2)
    top = 65535 if dtype == np.uint16 else 255
    image = rng.integers(0, top, size=(530, 777), dtype=dtype)
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(256, 256))
    window = DisplayWindow(0.13 * 65535, 0.91 * 65535)  # not on the 8-bit grid: rounding is exercised
    for fmt in ("png", "jpeg"):
        ref = write_dzi(read_image16(tmp_path / "in.tif"), tmp_path / f"ref-{fmt}", window=window,
                        pixel_size_nm=20.0, format=fmt)
        got = write_dzi_file(tmp_path / "in.tif", tmp_path / f"got-{fmt}", window=window, pixel_size_nm=20.0,
                             format=fmt)
        assert _tree(got) == _tree(ref)  # tiles byte for byte, display.json alike
    for name in ("ref-png", "got-png"):
        with tifffile.TiffFile(tmp_path / name / "mosaic.tif") as tif:
            assert np.array_equal(tif.pages[0].asarray(), read_image16(tmp_path / "in.tif"))
            assert len(tif.series[0].levels) > 1


def test_file_variant_of_a_float_map_divides_clips_and_quantises_as_numpy(tmp_path):
    from imaging.imageio import to_uint16
    from imaging.pyramid import write_dzi_file

    risk = (np.random.default_rng(3).random((300, 410), dtype=np.float32) * 3).astype(np.float32)
    tifffile.imwrite(tmp_path / "risk.tif", risk, tile=(256, 256))
    scale = 2.37
    window = DisplayWindow(0, 65535)
    ref = write_dzi(to_uint16(np.clip(risk / scale, 0, 1)), tmp_path / "ref", window=window, pixel_size_nm=5.0,
                    format="png")
    got = write_dzi_file(tmp_path / "risk.tif", tmp_path / "got", window=window, divide_by=scale,
                         pixel_size_nm=5.0, format="png")
    assert _tree(got) == _tree(ref)
    assert np.array_equal(tifffile.imread(got / "mosaic.tif", key=0), tifffile.imread(ref / "mosaic.tif", key=0))
    with pytest.raises(ValueError, match="divide_by"):
        write_dzi_file(tmp_path / "risk.tif", tmp_path / "bad", window=window, pixel_size_nm=5.0)
    assert not (tmp_path / "bad").exists()


def test_subsample_statistics_match_the_full_image(tmp_path):
    from imaging.imageio import display_window
    from imaging.pyramid import read_subsample

    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[0:1500, 0:1700]
    image = (20000 + 15000 * np.sin(rows / 97.0) * np.cos(cols / 61.0)
             + rng.normal(0, 3000, rows.shape)).clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "m.tif", image, tile=(256, 256))
    sample = read_subsample(tmp_path / "m.tif", max_pixels=100_000)
    step = int(np.ceil(np.sqrt(image.size / 100_000)))
    grid = image[::step, ::step][:image.shape[0] // step, :image.shape[1] // step]  # whole s×s blocks
    assert np.array_equal(sample, grid)  # a regular grid over the whole field
    full = np.percentile(image.astype(np.float64), [0.5, 99.5])
    window = display_window(sample)
    span = full[1] - full[0]
    assert abs(window.low - full[0]) < 0.01 * span and abs(window.high - full[1]) < 0.01 * span
    risk = rng.gamma(2.0, 0.1, size=(1500, 1700)).astype(np.float32)
    tifffile.imwrite(tmp_path / "r.tif", risk, tile=(256, 256))
    sampled = np.percentile(read_subsample(tmp_path / "r.tif", max_pixels=100_000), 99.5)
    assert sampled == pytest.approx(np.percentile(risk, 99.5), rel=0.03)


def test_a_region_is_the_same_pixels_as_the_whole_image_cut(tmp_path):
    """A stored mosaic (16-bit TIFF as the stitch writes it) and an 8-bit PNG: the box's pixels,
    clipped to the image; a box beside the image is refused."""
    from PIL import Image

    from imaging.imageio import ImageFileError, read_image16, write_image16
    from imaging.pyramid import read_region

    rng = np.random.default_rng(5)
    image = rng.integers(0, 65535, (700, 500), dtype=np.uint16)
    write_image16(tmp_path / "mosaic.tif", image, pixel_size_nm=32.5)
    assert np.array_equal(read_region(tmp_path / "mosaic.tif", (40, 310, 260, 520)), image[310:520, 40:260])
    assert np.array_equal(read_region(tmp_path / "mosaic.tif", (-5, 650, 900, 800)), image[650:, :])
    small = rng.integers(0, 255, (60, 80), dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "sem8.png")
    assert np.array_equal(read_region(tmp_path / "sem8.png", (10, 5, 30, 50)),
                          read_image16(tmp_path / "sem8.png")[5:50, 10:30])
    with pytest.raises(ImageFileError, match="outside"):
        read_region(tmp_path / "mosaic.tif", (600, 0, 700, 10))


def test_pyramids_and_atomically_written_files_are_readable_by_a_proxy_serving_media(tmp_path):
    # mkstemp and mkdtemp make 0600 files and 0700 folders: nginx serving media by X-Accel-Redirect could not read them
    import os
    import stat

    from imaging.imageio import atomic_path, process_umask, write_image16

    old = os.umask(0o022)
    try:
        assert process_umask() == 0o022
        folder = write_dzi(np.zeros((300, 200), np.uint16), tmp_path / "pyr", window=DisplayWindow(0, 1), pixel_size_nm=30)
        write_image16(tmp_path / "frame.tif", np.zeros((8, 8), np.uint16))
        with atomic_path(tmp_path / "notes.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for name in ("frame.tif", "notes.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
