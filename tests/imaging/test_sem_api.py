"""SEM upload through the API: pixel size from the file or the user, data bar cut, bad files refused."""
import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from imaging.models import SEMImage
from instruments.sim.dataset import simulate_sem
from instruments.sim.sem import write_sem_tiff


@pytest.fixture(scope="module")
def fei_tiff(tmp_path_factory):
    sem = simulate_sem(seed=3, shape=(160, 200), pixel_size_nm=20.0, rotation_deg=0.5)
    path = write_sem_tiff(tmp_path_factory.mktemp("sem") / "quanta.tif", sem)
    return path.read_bytes(), sem


def png_bytes():
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(api, user, project, content, name, **extra):
    return api(user).post("/api/sem-images/", {"project": project.pk, "file": SimpleUploadedFile(name, content),
                                               **extra}, format="multipart")


@pytest.mark.django_db
def test_fei_tiff_gives_its_pixel_size_and_loses_its_data_bar(api, project, operator, fei_tiff,
                                                              django_capture_on_commit_callbacks):
    content, sem = fei_tiff
    with django_capture_on_commit_callbacks(execute=False):
        response = upload(api, operator, project, content, "../../etc/quanta.tif")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["pixel_size_nm"] == pytest.approx(20.0, rel=1e-3) and body["pixel_size_source"] == "metadata"
    assert body["data_bar_rows"] == sem.data_bar_rows and body["height"] == 160 and body["width"] == 200
    record = SEMImage.objects.get(pk=body["id"])
    assert 0 <= record.display_low < record.display_high <= 65535 and record.display_high > 1000  # 16-bit units
    assert record.original_name == "quanta.tif" and ".." not in record.image.name


@pytest.mark.django_db
def test_an_imported_image_has_a_thumbnail_for_members_only(api, project, operator, viewer, outsider, fei_tiff,
                                                            django_capture_on_commit_callbacks):
    from imaging.jobs import sem_pyramid_work

    content, sem = fei_tiff
    with django_capture_on_commit_callbacks(execute=False):
        pk = upload(api, operator, project, content, "quanta.tif").json()["id"]
    url = f"/api/sem-images/{pk}/thumbnail/"
    missing = api(viewer).get(url)
    assert missing.status_code == 404 and "no pyramid yet" in missing.json()["detail"]
    sem_pyramid_work(pk)
    thumbnail = api(viewer).get(url)
    assert thumbnail.status_code == 200 and "immutable" in thumbnail["Cache-Control"]
    with Image.open(io.BytesIO(b"".join(thumbnail.streaming_content))) as shown:
        assert shown.size == (200, 160)  # the whole image (data bar cut) in one tile
    assert api(outsider).get(url).status_code == 404


@pytest.mark.django_db
def test_a_file_without_pixel_size_asks_for_it(api, project, operator, django_capture_on_commit_callbacks):
    response = upload(api, operator, project, png_bytes(), "sem.png")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "pixel_size_nm"
    assert not SEMImage.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = upload(api, operator, project, png_bytes(), "sem.png", pixel_size_nm=12.5)
    assert response.status_code == 201 and response.json()["pixel_size_source"] == "user"


@pytest.mark.django_db
@pytest.mark.parametrize("shape", [(1, 1), (8, 200)])
def test_an_image_too_small_to_pair_is_refused_on_file(api, project, operator, shape):
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, 128, np.uint8)).save(buffer, format="PNG")
    response = upload(api, operator, project, buffer.getvalue(), "speck.png", pixel_size_nm=5)
    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0] == {"field": "file", "code": "invalid_image", "message": (
        f"speck.png is {shape[1]} × {shape[0]} px: too small to pair with a mosaic (at least 32 × 32 px)")}
    assert not SEMImage.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("stated", ["INF", "0.0", "1e9"])
def test_a_pixel_size_a_file_states_beyond_reason_is_asked_for(api, project, operator, stated,
                                                               django_capture_on_commit_callbacks):
    # an OME PhysicalSizeX of INF was stored, and every later read of the project's SEM images failed (500)
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, (np.random.default_rng(1).random((64, 80)) * 65535).astype(np.uint16), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": stated, "PhysicalSizeXUnit": "nm"})
    response = upload(api, operator, project, buffer.getvalue(), "ome.tif")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "pixel_size_nm", response.json()
    assert not SEMImage.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = upload(api, operator, project, buffer.getvalue(), "ome.tif", pixel_size_nm=4)
    assert response.status_code == 201 and response.json()["pixel_size_nm"] == 4
    assert api(operator).get("/api/sem-images/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_not_an_image_or_truncated_is_400_on_file(api, project, operator, content):
    response = upload(api, operator, project, content, "x.png", pixel_size_nm=10)
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "file"
    assert not SEMImage.objects.exists()



@pytest.mark.django_db
@pytest.mark.parametrize("content", [b"x_nm,y_nm\n1.0,2.0\n", b"These are my notes."])
def test_a_file_that_is_no_image_is_refused_in_the_users_words(api, project, operator, content):
    response = upload(api, operator, project, content, "notes.tif", pixel_size_nm=10)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "file" and error["code"] == "invalid_image"
    # the user's file name, never the stored one nor an exception class
    assert error["message"].startswith("notes.tif:") and "original" not in error["message"]
    assert "Error" not in error["message"] and "TIFF, PNG, JPEG" in error["message"]


@pytest.mark.django_db
def test_a_page_the_file_lacks_is_refused_on_page(api, project, operator):
    response = upload(api, operator, project, png_bytes(), "sem.png", pixel_size_nm=10, page=3)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "page" and error["message"].startswith("sem.png")
    assert not SEMImage.objects.exists()

@pytest.mark.django_db
def test_oversized_upload_is_413(api, project, operator, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    response = upload(api, operator, project, png_bytes() + b"\x00" * 5000, "big.png", pixel_size_nm=10)
    assert response.status_code == 413 and response.json()["errors"][0]["field"] == "file"
    assert not SEMImage.objects.exists()


@pytest.mark.django_db
def test_viewers_and_outsiders_cannot_upload(api, project, viewer, outsider):
    assert upload(api, viewer, project, png_bytes(), "a.png", pixel_size_nm=10).status_code == 403
    response = upload(api, outsider, project, png_bytes(), "a.png", pixel_size_nm=10)
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "project"


@pytest.mark.django_db
def test_an_upload_a_crash_cut_short_leaves_only_what_the_sweep_removes(api, project, operator, fei_tiff,
                                                                          settings, monkeypatch,
                                                                          django_capture_on_commit_callbacks):
    from pathlib import Path

    from imaging import sem_import
    from ssumweb.media import sweep_staging

    def crash(*args, **kwargs):  # the server killed while it decodes the stored upload
        raise SystemExit("killed")

    monkeypatch.setattr(sem_import, "read_sem", crash)
    with pytest.raises(SystemExit):
        upload(api, operator, project, fei_tiff[0], "quanta.tif")
    root = Path(settings.MEDIA_ROOT)
    assert [p.name for p in (root / f"sem/{project.pk}").iterdir()][0].endswith(".tmp-upload")
    sweep_staging()
    assert not any(p.is_file() for p in root.rglob("*")) and not SEMImage.objects.exists()
    monkeypatch.undo()
    with django_capture_on_commit_callbacks(execute=False):
        body = upload(api, operator, project, fei_tiff[0], "quanta.tif").json()
    stored = SEMImage.objects.get(pk=body["id"])
    assert (root / stored.image.name).is_file() and (root / stored.original.name).is_file()
    assert not any(".tmp-" in p.name for p in root.rglob("*"))
