"""imaging.sem_import: formats, pixel size from metadata, data bar, limits and corrupt input."""

import io
import re
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

from imaging.imageio import ImageFileError, ImageTooLargeError, to_uint16, write_image16
from imaging.sem_import import detect_data_bar, import_sem
from tests.imaging.synthetic_ic import add_data_bar, ic_layout, render_sem

FEI_TEXT = "[User]\r\nDate=01/02/2026\r\n[Scan]\r\nPixelWidth=2.5e-009\r\nPixelHeight=2.5e-009\r\n[Beam]\r\nHV=5000\r\n"


def sem_image(seed=0, shape=(120, 160)):
    rng = np.random.default_rng(seed)
    return render_sem(ic_layout(shape, feature_px=1.5, rng=rng), inverted=False, rng=rng)


def fei_tiff_bytes(image, bar_rows=0):
    if bar_rows:
        image = add_data_bar(image, rows=bar_rows)
    buf = io.BytesIO()
    tifffile.imwrite(buf, to_uint16(image), extratags=[(34682, "s", 0, FEI_TEXT, True)])
    return buf.getvalue()


def test_fei_tiff_pixel_size_and_data_bar():
    image = sem_image()
    result = import_sem(fei_tiff_bytes(image, bar_rows=24))
    assert result.pixel_size_nm == pytest.approx(2.5)
    assert result.pixel_size_source == "metadata"
    assert result.data_bar_rows == 24
    assert result.image.shape == image.shape and result.image.dtype == np.float32
    assert np.allclose(result.image, image, atol=1 / 65535)
    assert result.metadata["fei"]["Scan"]["PixelWidth"] == pytest.approx(2.5e-9)
    assert result.crop_box == (0, 0, 160, 120)


def test_user_pixel_size_overrides_and_missing_is_none(tmp_path):
    image = sem_image(1)
    assert import_sem(fei_tiff_bytes(image), pixel_size_nm=3.0).pixel_size_source == "user"
    path = tmp_path / "plain.png"
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    result = import_sem(path)
    assert result.pixel_size_nm is None and result.pixel_size_source is None
    assert result.bit_depth == 8 and result.data_bar_rows == 0


def test_resolution_tags_round_trip(tmp_path):
    path = write_image16(tmp_path / "sem.tif", sem_image(2), pixel_size_nm=7.5)
    result = import_sem(path)
    assert result.pixel_size_nm == pytest.approx(7.5, rel=1e-6)
    assert result.bit_depth == 16


def test_ome_pixel_size_and_channel_choice():
    se, bse = sem_image(3), 1 - sem_image(3)
    buf = io.BytesIO()
    tifffile.imwrite(buf, to_uint16(np.stack([bse, se])), ome=True,
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.004, "PhysicalSizeXUnit": "µm",
                               "Channel": {"Name": ["BSE", "SE"]}})
    result = import_sem(buf.getvalue())
    assert result.pixel_size_nm == pytest.approx(4.0)
    assert result.pages == 2 and result.page == 1  # SE by default
    assert np.allclose(result.image, se, atol=1e-4)
    assert import_sem(buf.getvalue(), channel="BSE").page == 0
    with pytest.raises(ValueError, match="channel"):
        import_sem(buf.getvalue(), channel="EDS")


def test_multipage_tiff_page_selection():
    pages = [sem_image(4), sem_image(5)]
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        for p in pages:
            tw.write(to_uint16(p))
    data = buf.getvalue()
    assert np.allclose(import_sem(data).image, pages[0], atol=1e-4)
    assert np.allclose(import_sem(data, page=1).image, pages[1], atol=1e-4)
    with pytest.raises(ValueError, match="page"):
        import_sem(data, page=2)


def test_jpeg_and_16bit_png(tmp_path):
    image = sem_image(6)
    jpg = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).save(jpg, format="JPEG", quality=95)
    assert import_sem(jpg.getvalue()).image.shape == image.shape
    png = write_image16(tmp_path / "x.png", image, pixel_size_nm=5.0)
    result = import_sem(png)
    assert result.bit_depth == 16 and result.pixel_size_nm == pytest.approx(5.0, rel=1e-3)


def test_bomb_refused_before_decoding():
    big = Image.new("L", (4000, 3000))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        import_sem(buf.getvalue(), max_pixels=1_000_000)
    # a TIFF header declaring a giant page with almost no data: refused on the header alone
    with pytest.raises(ImageTooLargeError):
        import_sem(giant_tiff_header(60000, 60000))


def giant_tiff_header(width, height):
    """A small valid TIFF whose ImageWidth/ImageLength tags are patched to claim a giant image."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((8, 8), np.uint16))
    data = bytearray(buf.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages[0].tags
        offsets = {code: tags[code].valueoffset for code in (256, 257)}
        kinds = {code: tags[code].dtype for code in (256, 257)}
    for code, value in ((256, width), (257, height)):
        fmt = "<I" if int(kinds[code]) == 4 else "<H"
        struct.pack_into(fmt, data, offsets[code], value)
    return bytes(data)


@pytest.mark.parametrize("payload", [b"", b"hello, this is not an image at all", b"\x89PNG\r\n\x1a\nxx"])
def test_not_an_image(payload):
    with pytest.raises(ImageFileError):
        import_sem(payload)


def test_truncated_files():
    image = sem_image(7)
    png = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).save(png, format="PNG")
    with pytest.raises(ImageFileError, match="corrupt|truncated"):
        import_sem(png.getvalue()[: len(png.getvalue()) // 2])
    tif = fei_tiff_bytes(image)
    with pytest.raises(ImageFileError):
        import_sem(tif[:200])



def two_page_tiff():
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        for seed in (4, 5):
            tw.write(to_uint16(sem_image(seed)))
    return buf.getvalue()


def png_bytes(image, **save):
    buf = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).save(buf, **{"format": "PNG", **save})
    return buf.getvalue()


@pytest.mark.parametrize("payload, options", [
    (b"These are my notes, not an image.", {}),
    (b"x_nm,y_nm\n1.0,2.0\n", {}),
    (png_bytes(sem_image(7))[:800], {}),
    (fei_tiff_bytes(sem_image(7))[:200], {}),
    (giant_tiff_header(60000, 60000), {}),
    (png_bytes(sem_image(7)), {"max_pixels": 1000}),
    (two_page_tiff(), {"page": 5}),
    (png_bytes(sem_image(7)), {"page": 1}),
], ids=["text", "csv", "truncated png", "truncated tiff", "giant tiff", "over the limit", "no such page",
        "page of a png"])
def test_refusals_name_the_users_file_and_no_exception_class(tmp_path, payload, options):
    # the service stores the upload as original.<ext> and passes the name the user knows
    stored = tmp_path / "original.tif"
    stored.write_bytes(payload)
    with pytest.raises(ValueError) as refused:
        import_sem(stored, name="notes.tif", **options)
    message = str(refused.value)
    assert message.startswith("notes.tif") and "original" not in message
    assert not re.search(r"[A-Za-z]+(Error|Exception|Warning)\b", message), message
    assert "<" not in message  # no object reprs (tifffile's '<tifffile.TiffPage 0 @8>')


def test_a_file_that_is_no_image_is_told_the_formats_accepted():
    with pytest.raises(ImageFileError) as refused:
        import_sem(b"x_nm,y_nm\n1.0,2.0\n", name="notes.tif")
    for fmt in ("TIFF", "PNG", "JPEG", "BMP", "GIF", "WebP"):
        assert fmt in str(refused.value)


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "WEBP"])
def test_the_other_formats_documented_are_read(fmt):
    image = sem_image(8)
    result = import_sem(png_bytes(image, format=fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert result.image.shape == image.shape and result.bit_depth == 8


def test_our_pixel_limit_decides_not_pillows(monkeypatch):
    # Pillow's own bomb check (179 Mpx by default) would refuse images IMAGE_MAX_PIXELS allows
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert import_sem(png_bytes(sem_image(9))).image.shape == (120, 160)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 1,000"):
        import_sem(png_bytes(sem_image(9)), max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == 1000

def test_data_bar_detector_ignores_plain_images_and_finds_bright_bars():
    image = sem_image(8)
    assert detect_data_bar(image) == 0
    dark_bottom = image.copy()
    dark_bottom[-20:] = 0.0  # a featureless region is not a data bar (no marks)
    assert detect_data_bar(dark_bottom) == 0
    assert detect_data_bar(add_data_bar(image, rows=30, bright=True)) == 30


def test_simulator_fei_tiff(tmp_path):
    """The physics simulator's FEI-style TIFF: pixel size from [Scan] PixelWidth, its data bar cut."""
    sim = pytest.importorskip("instruments.sim.dataset")
    from instruments.sim.sem import write_sem_tiff

    sem = sim.simulate_sem(seed=3, shape=(160, 200), pixel_size_nm=12.5)
    path = write_sem_tiff(tmp_path / "sim.tif", sem)
    result = import_sem(path)
    assert result.pixel_size_nm == pytest.approx(12.5, rel=1e-6) and result.pixel_size_source == "metadata"
    assert result.data_bar_rows == sem.data_bar_rows
    assert result.image.shape == sem.image_area.shape
    # the detector alone (no DatabarHeight in the metadata) finds the same bar
    assert detect_data_bar(np.asarray(sem.image, np.float32) / 255.0) == sem.data_bar_rows
