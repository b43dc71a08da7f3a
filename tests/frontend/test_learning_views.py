"""The learning pages through Django's test client: scoping (other projects' objects are 404), what each page
renders for operators and viewers, and the models table's best-of-column marking."""
import re

import pytest
from django.test import Client

from frontend.learning_views import model_rows
from imaging.models import Mosaic, Registration, Sample, Scan, SEMImage
from mlcore.models import TrainedModel, TrainingRun
from ssumweb.models import JobStatus

pytestmark = pytest.mark.django_db


def login(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def registration(project):
    sample = Sample.objects.create(project=project, name="chip")
    scan = Scan.objects.create(project=project, sample=sample, name="s1", origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4,
                               size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5, contact_setpoint_nm=20, rows=2, cols=2)
    mosaic = Mosaic.objects.create(scan=scan, pixel_size_nm=32.5, width=300, height=200, pyramid="p/m",
                                   status=JobStatus.SUCCEEDED)
    sem = SEMImage.objects.create(project=project, sample=sample, name="sem-a", image="s/a.tif", width=256, height=256,
                                  pixel_size_nm=20, pixel_size_source="metadata", data_bar_rows=40, pyramid="p/s")
    return Registration.objects.create(mosaic=mosaic, sem_image=sem, method="landmarks", status=JobStatus.SUCCEEDED,
                                       mosaic_to_sem=[[1.6, 0, 0], [0, 1.6, 0], [0, 0, 1]], residual_px=0.4,
                                       confidence=0.9)


def test_model_rows_mark_the_best_of_each_column():
    metrics = {"pairs": 3, "model": {"psnr": 20.0, "ssim": 0.5, "cx": 0.3}, "input": {"psnr": 18.0, "ssim": 0.6, "cx": 0.4},
               "unsharp": {"psnr": 17.0, "ssim": 0.4, "cx": 0.2}, "richardson_lucy": {"psnr": 16.0, "ssim": 0.1, "cx": None}}
    rows = {r["key"]: r for r in model_rows(metrics)}
    assert [r["key"] for r in model_rows(metrics)] == ["model", "input", "unsharp", "richardson_lucy"]
    assert rows["model"]["best"] == [True, False, False]  # highest PSNR
    assert rows["input"]["best"] == [False, True, True]  # highest SSIM and CX (a similarity)
    assert rows["unsharp"]["best"] == [False, False, False]  # the lowest CX is the worst
    assert rows["richardson_lucy"]["cells"][2] == (None, False)
    assert model_rows({}) == []


def test_sem_upload_page_offers_only_operable_projects(project, other_project, operator, viewer):
    page = login(operator).get("/sem/upload/").content.decode()
    assert 'id="dropzone"' in page and project.name in page and other_project.name not in page
    assert "Only operators" in login(viewer).get("/sem/upload/").content.decode()


def test_sem_upload_page_offers_every_format_the_importer_reads(project, operator):
    page = login(operator).get("/sem/upload/").content.decode()
    accept = set(re.search(r'id="file"[^>]*accept="([^"]*)"', page).group(1).split(","))
    assert {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"} <= accept
    help_text = re.search(r'id="upload-help"[^>]*>([^<]*)<', page).group(1)
    assert all(fmt in help_text for fmt in ("TIFF", "PNG", "JPEG", "BMP", "GIF", "WebP"))


def test_pairing_page_lists_mosaics_and_shows_the_data_bar(registration, operator, outsider):
    sem = registration.sem_image
    page = login(operator).get(f"/sem/{sem.pk}/").content.decode()
    assert "data bar cropped: 40 rows" in page and 'id="pair-form"' in page
    assert f'<option value="{registration.mosaic_id}">' in page
    assert login(outsider).get(f"/sem/{sem.pk}/").status_code == 404


def test_pairing_page_tells_mosaics_of_alike_named_scans_apart(registration, project, operator):
    import datetime

    from django.utils import timezone

    first = registration.mosaic
    second_scan = Scan.objects.create(project=project, sample=Sample.objects.create(project=project, name="wafer 2"),
                                      name=first.scan.name, origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4,
                                      size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5, contact_setpoint_nm=20,
                                      rows=2, cols=2)
    stitched = timezone.make_aware(datetime.datetime(2026, 11, 20, 9, 5))
    second = Mosaic.objects.create(scan=second_scan, pixel_size_nm=32.5, width=300, height=200, pyramid="p/m2",
                                   status=JobStatus.SUCCEEDED, finished_at=stitched)
    page = login(operator).get(f"/sem/{registration.sem_image_id}/").content.decode()
    assert f'<option value="{second.pk}">Mosaic {second.pk}: wafer 2 / s1, stitched 2026-11-20 09:05, 300×200 px (9.75 × 6.5 µm)</option>' in page
    created = timezone.localtime(first.created_at).strftime("%Y-%m-%d %H:%M")  # never finished: when it was made
    assert f'<option value="{first.pk}">Mosaic {first.pk}: chip / s1, stitched {created}, 300×200 px (9.75 × 6.5 µm)</option>' in page
    # the scan page's picker names it alike, with the flat field it was stitched with where its report says
    Mosaic.objects.filter(pk=second.pk).update(report={"flatfield": "calibration"})
    TrainedModel.objects.create(project=project, name="cyclegan-a", weights="w.pt", pixel_size_nm=20)
    page = login(operator).get(f"/scans/{second_scan.pk}/").content.decode()
    assert (f'<option value="{second.pk}">Mosaic {second.pk}: wafer 2 / s1, stitched 2026-11-20 09:05 with a flat '
            'field calibrated on bare silicon, 300×200 px (9.75 × 6.5 µm)</option>') in page


def test_registration_page_and_its_scoping(registration, operator, viewer, outsider):
    page = login(operator).get(f"/registrations/{registration.pk}/").content.decode()
    assert 'id="overlay-canvas"' in page and f"sem={registration.pk}" in page
    assert 'id="accept" class="primary" >' in page or 'id="accept" class="primary" disabled' not in page
    assert 'id="accept" class="primary" disabled' in login(viewer).get(f"/registrations/{registration.pk}/").content.decode()
    assert login(outsider).get(f"/registrations/{registration.pk}/").status_code == 404


def test_a_failed_registrations_page_offers_to_try_again_on_the_same_mosaic(registration, operator):
    retry = f'href="/sem/{registration.sem_image_id}/?mosaic={registration.mosaic_id}">Try again</a>'
    page = login(operator).get(f"/registrations/{registration.pk}/").content.decode()
    assert re.search(r'id="reg-retry"[^>]*hidden', page) and retry in page  # succeeded: the result's Redo instead
    Registration.objects.filter(pk=registration.pk).update(
        status=JobStatus.FAILED, failure_reason="Registration failed: ambiguous: the SEM image matches other places")
    page = login(operator).get(f"/registrations/{registration.pk}/").content.decode()
    assert "Registration failed: ambiguous" in page
    assert not re.search(r'id="reg-retry"[^>]*hidden', page) and retry in page


def test_the_pairs_form_suggests_a_tile_size_that_fits_the_overlap(registration, operator):
    # the SEM image's 256 px at 1.6 SEM px per mosaic px: a 160 px footprint, where 512 px tiles gave 1 pair or none
    page = login(operator).get(f"/registrations/{registration.pk}/").content.decode()
    assert 'id="tile_px" name="tile_px" type="number" min="32" max="2048" value="64"' in page
    assert re.search(r"The registered overlap is about 16\d × 16\d mosaic px: 4 tiles of 64 px fit it", page)
    Registration.objects.filter(pk=registration.pk).update(mosaic_to_sem=[[0.1, 0, 0], [0, 0.1, 0], [0, 0, 1]])
    page = login(operator).get(f"/registrations/{registration.pk}/").content.decode()
    # a footprint over the whole 300 × 200 px mosaic: 2 × 1 tiles of 128 px, so of 64 px (4 × 3)
    assert "about 300 × 200 mosaic px: 12 tiles of 64 px fit it" in page


def test_registration_page_lists_every_pair_set_newest_first(registration, operator):
    from imaging.models import ImagePair, PairSet

    done = PairSet.objects.create(registration=registration, pixel_size_nm=20, tile_px=64, stride_px=32,
                                  status=JobStatus.SUCCEEDED)
    for split in ("train", "test", "test"):
        ImagePair.objects.create(registration=registration, pair_set=done, lr_image="a.png", hr_image="b.png",
                                 box_x=0, box_y=0, box_size=64, pixel_size_nm=20, split=split)
    one = PairSet.objects.create(registration=registration, pixel_size_nm=20, tile_px=128, status=JobStatus.SUCCEEDED)
    ImagePair.objects.create(registration=registration, pair_set=one, lr_image="a.png", hr_image="b.png", box_x=0,
                             box_y=0, box_size=128, pixel_size_nm=20, split="train")
    failed = PairSet.objects.create(registration=registration, tile_px=256, stride_px=256, status=JobStatus.FAILED,
                                    failure_reason="No tile of 256 px fits the registered overlap with enough "
                                                   "structure: 4 tiles outside the registered overlap.")
    page = login(operator).get(f"/registrations/{registration.pk}/").content.decode()
    rows = [page.index(f'id="pair-set-{p.pk}"') for p in (failed, one, done)]
    assert rows == sorted(rows)  # newest first
    assert "4 tiles outside the registered overlap" in page
    assert f"/api/pair-sets/{done.pk}/export" in page and f"/api/pair-sets/{one.pk}/export" in page
    assert f"/api/pair-sets/{failed.pk}/export" not in page
    assert "3 pairs: 1 train, 2 test" in page and "1 pair: 1 train, 0 test" in page
    # a test fraction asked for (0.2 by default) and none held out: the row says why and what to do
    assert "1 pair: 1 train, 0 test (too few tiles to hold any out for testing: try smaller tiles)" in page
    assert "2 test (too few" not in page
    assert "64 px tiles every 32 px" in page and "256 px tiles every 256 px" in page


def test_training_pages(registration, project, operator, outsider):
    from imaging.models import ImagePair, PairSet

    pair_set = PairSet.objects.create(registration=registration, pixel_size_nm=20, tile_px=64, status=JobStatus.SUCCEEDED)
    ImagePair.objects.create(registration=registration, pair_set=pair_set, lr_image="a.png", hr_image="b.png", box_x=0,
                             box_y=0, box_size=64, pixel_size_nm=20, split="train")
    page = login(operator).get(f"/training/?registration={registration.pk}").content.decode()
    assert f'value="{registration.pk}" data-project="{project.pk}" checked' in page
    assert 'name="steps" type="number" min="1" value="2000"' in page and 'id="crop_px" name="crop_px" type="number" min="32" max="1024" value="256"' in page
    run = TrainingRun.objects.create(project=project, name="run-a", total_steps=4, step=2,
                                     loss_history=[{"step": 1, "g_total": 2.0}, {"step": 2, "g_total": 1.5}])
    detail = login(operator).get(f"/training/{run.pk}/").content.decode()
    assert 'id="loss-canvas"' in detail and '"loss_history": [{"step": 1, "g_total": 2.0}' in detail
    assert "run-a" in login(operator).get("/training/?q=run").content.decode()
    assert "run-a" not in login(operator).get("/training/?q=zzz").content.decode()
    assert login(outsider).get(f"/training/{run.pk}/").status_code == 404


def test_training_page_offers_each_pair_set_of_a_registration_not_their_sum(registration, project, operator):
    from imaging.models import ImagePair, PairSet

    def finished(tile_px, pairs):
        pair_set = PairSet.objects.create(registration=registration, pixel_size_nm=20, tile_px=tile_px,
                                          stride_px=tile_px, status=JobStatus.SUCCEEDED)
        for _ in range(pairs):
            ImagePair.objects.create(registration=registration, pair_set=pair_set, lr_image="a.png", hr_image="b.png",
                                     box_x=0, box_y=0, box_size=tile_px, pixel_size_nm=20, split="train")
        return pair_set

    small, large = finished(64, 16), finished(128, 1)
    failed = PairSet.objects.create(registration=registration, tile_px=256, stride_px=256, status=JobStatus.FAILED)
    page = login(operator).get(f"/training/?registration={registration.pk}").content.decode()
    assert "17 pairs" not in page
    assert f'<option value="{large.pk}" selected>Pair set {large.pk}: 1 pair (1 train, 0 test), 128 px tiles' in page
    assert f'<option value="{small.pk}">Pair set {small.pk}: 16 pairs (16 train, 0 test), 64 px tiles' in page
    assert f"Pair set {failed.pk}" not in page
    page = login(operator).get(f"/training/?pair_set={small.pk}").content.decode()  # the registration page's link
    assert f'value="{registration.pk}" data-project="{project.pk}" checked' in page
    assert f'<option value="{small.pk}" selected>' in page


def test_models_page_and_translate_form(registration, project, operator, outsider):
    model = TrainedModel.objects.create(project=project, name="cyclegan-a", weights="w.pt", pixel_size_nm=20, metrics={
        "pairs": 2, "model": {"psnr": 21.5, "ssim": 0.7, "cx": 0.2}, "input": {"psnr": 19.0, "ssim": 0.5, "cx": 0.3}})
    page = login(operator).get("/models/").content.decode()
    assert "cyclegan-a" in page and "<strong>21.500</strong>" in page and "19.000" in page
    assert "cyclegan-a" not in login(outsider).get("/models/").content.decode()
    scan = login(operator).get(f"/scans/{registration.mosaic.scan_id}/").content.decode()
    assert 'id="translate-form"' in scan and f'<option value="{model.pk}">cyclegan-a</option>' in scan


def test_sem_list_filters_by_project(registration, project, other_project, operator):
    page = login(operator).get(f"/sem/?project={project.pk}").content.decode()
    assert "sem-a" in page and f"/sem/{registration.sem_image_id}/" in page
    assert "sem-a" not in login(operator).get("/sem/?q=nothing").content.decode()


def test_sem_images_show_their_picture_in_the_list_and_on_their_page(registration, project, viewer):
    sem = registration.sem_image
    page = login(viewer).get("/sem/").content.decode()
    assert f'src="/api/sem-images/{sem.pk}/thumbnail"' in page
    detail = login(viewer).get(f"/sem/{sem.pk}/").content.decode()
    assert 'id="osd-sem-view"' in detail and "the instrument's data bar cut" in detail
    assert f'href="/api/sem-images/{sem.pk}/image"' in detail  # the 16-bit TIFF
    SEMImage.objects.filter(pk=sem.pk).update(pyramid="")  # its deep-zoom view not built yet
    assert "list-thumb empty" in login(viewer).get("/sem/").content.decode()
    detail = login(viewer).get(f"/sem/{sem.pk}/").content.decode()
    assert 'id="osd-sem-view"' not in detail and "still being built" in detail


def test_a_scans_own_mosaic_is_offered_once_its_final_stitch_succeeded(registration, project, operator):
    TrainedModel.objects.create(project=project, name="cyclegan-a", weights="w.pt", pixel_size_nm=20)
    scan = registration.mosaic.scan
    grown = Mosaic.objects.create(scan=scan, live=True, status=JobStatus.RUNNING, pixel_size_nm=32.5, width=64,
                                  height=64)                       # the live mosaic, still growing
    page = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert f'<option value="{grown.pk}">' not in page
    Mosaic.objects.filter(pk=grown.pk).update(status=JobStatus.SUCCEEDED, pyramid="p/live")  # its final stitch
    page = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert f'<option value="{grown.pk}">' in page
    assert f'value="{grown.pk}"' in login(operator).get(f"/sem/{registration.sem_image_id}/").content.decode()


def test_the_dashboard_links_each_running_training_run_and_translation(registration, project, operator):
    from mlcore.models import Translation

    run = TrainingRun.objects.create(project=project, name="run-a", total_steps=4, step=2, status=JobStatus.RUNNING)
    model = TrainedModel.objects.create(project=project, name="cyclegan-a", weights="w.pt", pixel_size_nm=20)
    mosaic = registration.mosaic
    Translation.objects.create(mosaic=mosaic, model=model, status=JobStatus.QUEUED)
    page = login(operator).get("/").content.decode()
    assert f'<a href="/training/{run.pk}/">Training run-a</a>' in page
    assert f'<a href="/scans/{mosaic.scan_id}/#translate-section">Translation of mosaic {mosaic.pk}</a>' in page
