"""The learning half through the Django shell: registration by landmarks → pairs → training run →
trained model with metrics → translation with pyramids, each as the job a user starts from the API."""
import io
import json
import zipfile

import numpy as np
import pytest

from imaging.imageio import write_image16
from imaging.jobs import pairs_work, registration_work
from imaging.models import ImagePair, Mosaic, PairSet, Registration, Sample, SEMImage
from imaging.services import plan_scan
from instruments.sim.chip import Chip
from instruments.sim.dataset import simulate_pair
from mlcore.jobs import rewind_to_checkpoint, training_work, translation_work
from mlcore.models import TrainedModel, TrainingRun, Translation
from ssumweb.jobs import Progress, run_job
from ssumweb.media import absolute
from ssumweb.models import JobStatus
from tests.imaging.synthetic_ic import registration_error_px

SIZE = 256


@pytest.fixture(scope="module")
def pair():
    return simulate_pair(Chip(seed=4), centre_xy_nm=(100_000, 100_000), size_px=SIZE, pixel_size_nm=32.5, seed=4)


@pytest.fixture
def registered(project, operator, pair):
    sample = Sample.objects.create(project=project, name="chip")
    scan = plan_scan(sample=sample, name="s", user=operator, plan=dict(
        origin_x_nm=0, origin_y_nm=0, size_x_nm=1000, size_y_nm=1000, overlap=0.3, exposure_ms=10,
        contact_setpoint_nm=20))
    write_image16(absolute("m/mosaic.tif"), pair.lr, pixel_size_nm=pair.pixel_size_nm)
    mosaic = Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED, image="m/mosaic.tif", width=SIZE,
                                   height=SIZE, pixel_size_nm=pair.pixel_size_nm)
    write_image16(absolute("s/sem.tif"), pair.hr.astype(np.uint16) * 257, pixel_size_nm=pair.pixel_size_nm)
    sem = SEMImage.objects.create(project=project, name="sem", image="s/sem.tif", width=SIZE, height=SIZE,
                                  pixel_size_nm=pair.pixel_size_nm, pixel_size_source="metadata")
    # the images are aligned by construction: a succeeded registration at the identity (the job
    # itself runs in the tests that are about it)
    return Registration.objects.create(mosaic=mosaic, sem_image=sem, method="landmarks", landmarks=CORNERS,
                                       status=JobStatus.SUCCEEDED, mosaic_to_sem=np.eye(3).tolist())


CORNERS = [[x, y, x, y] for x, y in [[0, 0], [SIZE - 1, 0], [0, SIZE - 1], [SIZE - 1, SIZE - 1]]]


@pytest.mark.django_db
def test_landmark_registration_pairs_training_and_translation(api, registered, project, operator,
                                                              django_capture_on_commit_callbacks):
    registered = Registration.objects.create(mosaic=registered.mosaic, sem_image=registered.sem_image,
                                             method="landmarks", landmarks=CORNERS)
    run_job("imaging.Registration", registered.pk, registration_work)
    registered.refresh_from_db()
    assert registered.status == JobStatus.SUCCEEDED, registered.failure_reason
    # the clicks' fit (exact here) refined on the images, which match best about a pixel away
    # (the SEM stand-in is the simulator's sharp target, the mosaic its SSUM view)
    assert registered.details["landmarks"]["method"] == "landmarks"
    assert "polish_from_clicks_px" in registered.details
    assert registration_error_px(np.eye(3), np.asarray(registered.mosaic_to_sem), (SIZE, SIZE)) < 1.5

    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 64,
                                                          "stride_px": 64, "test_fraction": 0.5}, format="json")
    assert response.status_code == 201, response.json()
    pair_set_id = response.json()["id"]
    run_job("imaging.PairSet", pair_set_id, pairs_work)
    pair_set = PairSet.objects.get(pk=pair_set_id)
    assert pair_set.status == JobStatus.SUCCEEDED, pair_set.failure_reason
    splits = set(ImagePair.objects.filter(pair_set=pair_set).values_list("split", flat=True))
    assert splits == {"train", "test"}
    exported = api(operator).get(f"/api/pair-sets/{pair_set_id}/export/")
    assert exported.status_code == 200
    # the zip's manifest keeps each pair's provenance: its box in the mosaic, its train/test block,
    # and what the cut skipped
    with zipfile.ZipFile(io.BytesIO(b"".join(exported.streaming_content))) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["skipped"] == pair_set.skipped and set(manifest["skipped"]) >= {"outside_overlap", "low_structure"}
    assert manifest["stride_px"] == 64 and manifest["registration"] == {"id": registered.pk}
    for record in manifest["pairs"]:
        x0, y0, x1, y1 = record["box_px"]
        assert record["box_mosaic_px"] == [x0, y0, x1, y1]  # one pixel size: the same box
        assert record["block"] == [x0 // 128, y0 // 128]  # blocks of two 64 px tiles
    by_block = {}
    for record in manifest["pairs"]:
        by_block.setdefault(tuple(record["block"]), set()).add(record["split"])
    assert all(len(splits) == 1 for splits in by_block.values()) and len(by_block) > 1

    settings = {"steps": 4, "crop_px": 32, "batch_size": 2, "blocks": 1, "features": 4, "seed": 1}
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/training-runs/", {"project": project.pk, "name": "tiny",
                                                              "registrations": [registered.pk], "config": settings},
                                      format="json")
    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]
    run_job("mlcore.TrainingRun", run_id, training_work)
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == JobStatus.SUCCEEDED, run.failure_reason
    assert run.step == 4 and [e["step"] for e in run.loss_history] == [1, 2, 3, 4]
    assert {"g_total", "d_a", "d_b", "cycle", "contextual"} <= set(run.loss_history[-1])
    model = TrainedModel.objects.get(training_run=run)
    assert {"model", "input", "unsharp", "richardson_lucy"} <= set(model.metrics)  # beside its baselines
    assert model.metrics["pairs"] == ImagePair.objects.filter(pair_set=pair_set, split="test").count()
    assert api(operator).get(f"/api/models/{model.pk}/weights/").status_code == 200

    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/translations/", {"mosaic": registered.mosaic_id, "model": model.pk},
                                      format="json")
    assert response.status_code == 201, response.json()
    run_job("mlcore.Translation", response.json()["id"], translation_work)
    translation = Translation.objects.get(pk=response.json()["id"])
    assert translation.status == JobStatus.SUCCEEDED, translation.failure_reason
    assert translation.pyramid and translation.risk_pyramid
    dzi = api(operator).get(f"/api/translations/{translation.pk}/output/dzi/")
    assert dzi.status_code == 200


@pytest.mark.django_db
def test_training_needs_pairs(api, registered, project, operator):
    response = api(operator).post("/api/training-runs/", {"project": project.pk, "name": "x",
                                                          "registrations": [registered.pk]}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "registrations"


@pytest.mark.django_db
def test_landmarks_the_images_put_far_off_succeed_as_clicked_saying_so(registered):
    """All clicks 10 px off: refining would move further than clicks err, so the job keeps the
    clicks' fit (the user's placement, consistent in itself) and says the refinement was refused."""
    spots = [[20, 20], [SIZE - 30, 20], [20, SIZE - 30], [SIZE - 30, SIZE - 30]]
    shifted = Registration.objects.create(mosaic=registered.mosaic, sem_image=registered.sem_image, method="landmarks",
                                          landmarks=[[x + 10, y, x, y] for x, y in spots])
    run_job("imaging.Registration", shifted.pk, registration_work)
    shifted.refresh_from_db()
    assert shifted.status == JobStatus.SUCCEEDED, shifted.failure_reason
    assert np.allclose(shifted.mosaic_to_sem, [[1, 0, -10], [0, 1, 0], [0, 0, 1]], atol=1e-6)
    assert "match best" in shifted.details["refinement_refused"]
    assert shifted.residual_px == pytest.approx(0, abs=1e-6)


@pytest.mark.django_db
def test_collinear_landmarks_are_refused(api, registered, operator):
    response = api(operator).post("/api/registrations/", {
        "mosaic": registered.mosaic_id, "sem_image": registered.sem_image_id, "method": "landmarks",
        "landmarks": [[0, 0, 0, 0], [10, 10, 10, 10], [20, 20, 20, 20]]}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "landmarks"
    assert "the mosaic landmarks lie on one line (collinear)" in response.json()["errors"][0]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("row, named", [([300, 5, 5, 5], "the mosaic point (300, 5)"),
                                        ([5, 5, 5, -1], "the SEM point (5, -1)")])
def test_a_landmark_outside_its_image_is_refused(api, registered, operator, row, named):
    count = Registration.objects.count()
    response = api(operator).post("/api/registrations/", {
        "mosaic": registered.mosaic_id, "sem_image": registered.sem_image_id, "method": "landmarks",
        "landmarks": [[10, 10, 10, 10], [200, 20, 200, 20], [30, 220, 30, 220], row]}, format="json")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "landmarks" and f"Landmark 4: {named} lies outside" in error["message"]
    assert Registration.objects.count() == count


@pytest.mark.django_db
def test_pairs_skip_tiles_over_frames_the_stitcher_placed_unsurely(api, registered, project, operator,
                                                                   django_capture_on_commit_callbacks):
    from instruments.models import Instrument

    # a 2 × 2 scan of 128 px frames whose first frame (top left) was placed with low confidence
    instrument = Instrument.objects.create(project=project, name="bench", pixel_size_nm=32.5,
                                           fov_diameter_nm=128 * 32.5 / 0.8)  # useful circle: the whole frame width
    mosaic = registered.mosaic
    mosaic.scan.instrument = instrument
    mosaic.scan.save(update_fields=["instrument"])
    Mosaic.objects.filter(pk=mosaic.pk).update(report={
        "frame_shape": [128, 128], "positions_px": [[0, 0], [128, 0], [0, 128], [128, 128]], "uncertain_frames": [0],
        "frame_index": [0, 1, 2, 3]})

    def extract(**options):
        with django_capture_on_commit_callbacks(execute=False):
            response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 64,
                                                              "test_fraction": 0, **options}, format="json")
        assert response.status_code == 201, response.json()
        run_job("imaging.PairSet", response.json()["id"], pairs_work)
        pair_set = PairSet.objects.get(pk=response.json()["id"])
        assert pair_set.status == JobStatus.SUCCEEDED, pair_set.failure_reason
        return pair_set, list(ImagePair.objects.filter(pair_set=pair_set).values_list("box_x", "box_y"))

    skipping, boxes = extract()
    # the top-left frame's circle (centre 63.5, radius 64) reaches the four tiles of its quarter, no others
    assert skipping.skip_uncertain and skipping.skipped["uncertain_placement"] == 4
    assert all(x >= 128 or y >= 128 for x, y in boxes)
    keeping, all_boxes = extract(skip_uncertain=False)
    assert keeping.skipped["uncertain_placement"] == 0 and len(all_boxes) == len(boxes) + 4
    assert api(operator).get(f"/api/pair-sets/{skipping.pk}/").json()["skipped"]["uncertain_placement"] == 4


@pytest.mark.django_db
def test_automatic_registration_job_stores_what_vouches_for_it(api, registered, project, operator, pair,
                                                               django_capture_on_commit_callbacks):
    """An SEM image of part of the mosaic (30, 40) px in: registered automatically as a job, the
    transform within a pixel, and the stored details say how it was checked (the registration
    page shows them)."""
    write_image16(absolute("s/sem-part.tif"), pair.hr[40:200, 30:210].astype(np.uint16) * 257,
                  pixel_size_nm=pair.pixel_size_nm)
    part = SEMImage.objects.create(project=project, name="part", image="s/sem-part.tif", width=180, height=160,
                                   pixel_size_nm=pair.pixel_size_nm, pixel_size_source="metadata")
    corners = np.array([[0, 0, 1], [179, 0, 1], [0, 159, 1], [179, 159, 1]], float).T
    truth = corners.copy()
    truth[0] += 30
    truth[1] += 40
    for search_box in (None, [10, 25, 250, 215.5]):  # the whole mosaic, then only the part around it
        with django_capture_on_commit_callbacks(execute=False):
            response = api(operator).post("/api/registrations/", {
                "mosaic": registered.mosaic_id, "sem_image": part.pk, "method": "automatic",
                "search_box": search_box}, format="json")
        assert response.status_code == 201, response.json()
        run_job("imaging.Registration", response.json()["id"], registration_work)
        body = api(operator).get(f"/api/registrations/{response.json()['id']}/").json()
        assert body["status"] == JobStatus.SUCCEEDED, body["failure_reason"]
        mapped = np.linalg.inv(np.asarray(body["mosaic_to_sem"])) @ corners  # SEM px → mosaic px
        assert np.abs(mapped[:2] / mapped[2] - truth[:2]).max() < 1.0
        assert body["details"]["verify_subregions"]["verified"]
        assert body["details"]["local"]["located"] >= 3 and body["details"]["local"]["off_px"] < 1.5
    assert body["search_box"] == [10, 25, 250, 216] and body["details"]["part_origin_px"] == [10, 25]


@pytest.mark.django_db
def test_a_search_box_too_large_for_the_sem_image_says_to_zoom_closer(api, registered, project, operator, pair,
                                                                    django_capture_on_commit_callbacks):
    """A 100 px SEM image and a 900 px search box (1/81 of its area): refused before the search,
    saying to zoom closer, not to search a part of the mosaic (it did)."""
    big = np.tile(pair.lr, (4, 4))[:900, :900]
    write_image16(absolute("m/big.tif"), big, pixel_size_nm=pair.pixel_size_nm)
    mosaic = Mosaic.objects.create(scan=registered.mosaic.scan, status=JobStatus.SUCCEEDED, image="m/big.tif",
                                   width=900, height=900, pixel_size_nm=pair.pixel_size_nm)
    write_image16(absolute("s/sem-bit.tif"), pair.hr[0:100, 0:100].astype(np.uint16) * 257,
                  pixel_size_nm=pair.pixel_size_nm)
    bit = SEMImage.objects.create(project=project, name="bit", image="s/sem-bit.tif", width=100, height=100,
                                  pixel_size_nm=pair.pixel_size_nm, pixel_size_source="metadata")
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/registrations/", {
            "mosaic": mosaic.pk, "sem_image": bit.pk, "method": "automatic", "search_box": [0, 0, 900, 900]},
            format="json")
    assert response.status_code == 201, response.json()
    run_job("imaging.Registration", response.json()["id"], registration_work)
    body = api(operator).get(f"/api/registrations/{response.json()['id']}/").json()
    assert body["status"] == JobStatus.FAILED
    assert body["failure_reason"] == (
        "Registration failed: the SEM image covers only 1/81 of the search box's area, too little to check a match "
        "in all of it (at least 1/64); zoom the mosaic closer to where the SEM image lies")


@pytest.mark.django_db
@pytest.mark.parametrize("extra, message", [
    ({"search_box": [0, 0, 300, 100]}, "The search box must lie within the mosaic (0…256 × 0…256 px)."),
    ({"search_box": [50, 50, 60, 200]}, "at least 16 px each way"),
    ({"search_box": [0, 0, 100]}, ""),
    ({"search_box": [0, 0, 100, 100], "method": "landmarks",
      "landmarks": [[0, 0, 0, 0], [100, 0, 100, 0], [0, 100, 0, 100]]}, "applies to automatic registration only"),
])
def test_a_bad_search_box_is_refused_naming_it(api, registered, operator, extra, message):
    response = api(operator).post("/api/registrations/", {
        "mosaic": registered.mosaic_id, "sem_image": registered.sem_image_id, "method": "automatic", **extra},
        format="json")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "search_box" and message in error["message"], error
    assert Registration.objects.count() == 1  # only the fixture's


@pytest.mark.django_db
@pytest.mark.parametrize("pixel_size_nm", [None, 65.0])
def test_pairs_read_only_the_sem_footprint_of_the_mosaic(api, registered, operator, monkeypatch, pixel_size_nm,
                                                          django_capture_on_commit_callbacks):
    # The SEM image registered 64 px right and 32 px down: it covers x ≥ 64, y ≥ 32 of the mosaic. The job
    # decodes that part (and a pixel around) only, and cuts the pairs the whole mosaic gives, on the
    # mosaic's grid and on one of 2 mosaic px.
    from imaging import pairs, pyramid
    from imaging.imageio import read_image16

    shift = np.array([[1.0, 0, -64], [0, 1, -32], [0, 0, 1]])
    Registration.objects.filter(pk=registered.pk).update(mosaic_to_sem=shift.tolist())
    boxes, whole_reads = [], []
    read_region = pyramid.read_region
    monkeypatch.setattr(pyramid, "read_region", lambda path, box: boxes.append(box) or read_region(path, box))
    monkeypatch.setattr("imaging.imageio.read_image16",
                        lambda path, **kw: whole_reads.append(str(path)) or read_image16(path, **kw))
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 32,
                                                          "stride_px": 16, "test_fraction": 0.3,
                                                          **({"pixel_size_nm": pixel_size_nm} if pixel_size_nm else {})},
                                      format="json")
    assert response.status_code == 201, response.json()
    run_job("imaging.PairSet", response.json()["id"], pairs_work)
    pair_set = PairSet.objects.get(pk=response.json()["id"])
    assert pair_set.status == JobStatus.SUCCEEDED, pair_set.failure_reason
    f = (pixel_size_nm or registered.mosaic.pixel_size_nm) / registered.mosaic.pixel_size_nm
    assert boxes == [(62, 30, SIZE, SIZE) if f == 1 else (56, 24, SIZE, SIZE)]  # 6 px around, on a multiple of 2 px
    assert not any(path.endswith("mosaic.tif") for path in whole_reads)
    mosaic = read_image16(absolute(registered.mosaic.image.name))
    whole = pairs.cut_pairs(mosaic, read_image16(absolute(registered.sem_image.image.name)), shift,
                            mosaic_px_nm=registered.mosaic.pixel_size_nm, pixel_size_nm=pixel_size_nm, tile_px=32,
                            stride_px=16, test_fraction=0.3, mosaic_valid=mosaic > 0)
    stored = ImagePair.objects.filter(pair_set=pair_set).order_by("pk")
    assert [(p.box_x, p.box_y, p.split) for p in stored] == [(p.box_px[0], p.box_px[1], p.split) for p in whole.pairs]
    assert pair_set.skipped == whole.skipped and whole.pairs


@pytest.mark.django_db
def test_pairs_of_an_sem_image_registered_outside_the_mosaic_fail_saying_so(api, registered, operator,
                                                                          django_capture_on_commit_callbacks):
    Registration.objects.filter(pk=registered.pk).update(mosaic_to_sem=[[1.0, 0, -1000], [0, 1, 0], [0, 0, 1]])
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 32}, format="json")
    assert response.status_code == 201, response.json()
    run_job("imaging.PairSet", response.json()["id"], pairs_work)
    pair_set = PairSet.objects.get(pk=response.json()["id"])
    assert pair_set.status == JobStatus.FAILED
    assert "lies outside the mosaic" in pair_set.failure_reason and not ImagePair.objects.filter(pair_set=pair_set)


@pytest.mark.django_db
def test_pairs_cancelled_part_way_leave_no_file_and_done_ones_lie_where_their_records_say(
        api, registered, operator, django_capture_on_commit_callbacks):
    from ssumweb.jobs import request_cancel

    def pair_set():
        with django_capture_on_commit_callbacks(execute=False):
            response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 32,
                                                              "stride_px": 32}, format="json")
        return PairSet.objects.get(pk=response.json()["id"])

    cancelled = pair_set()

    def cancel_after_the_first_pair(obj, progress):
        def progress_then_cancel(fraction, message="", **extra):
            progress(fraction, message, **extra)
            if message.startswith("Pair 1 of"):
                request_cancel(PairSet.objects.get(pk=obj.pk))
                progress.check_cancel()
        return pairs_work(obj, progress_then_cancel)

    run_job("imaging.PairSet", cancelled.pk, cancel_after_the_first_pair)
    assert PairSet.objects.get(pk=cancelled.pk).status == JobStatus.CANCELLED
    assert not any(p.is_file() for p in absolute("pairs").rglob("*"))  # the first pair's PNGs went with it
    done = pair_set()
    run_job("imaging.PairSet", done.pk, pairs_work)
    stored = ImagePair.objects.filter(pair_set=done)
    assert stored and all(absolute(p.lr_image.name).is_file() and absolute(p.hr_image.name).is_file() for p in stored)
    assert {p.name for p in absolute("pairs").iterdir()} == {str(done.pk)}


@pytest.mark.django_db
def test_pairs_none_of_which_fit_fail_saying_why_in_words(api, registered, operator, django_capture_on_commit_callbacks):
    # the SEM image registered 200 px right: a 56 px strip of overlap, narrower than a 64 px tile
    Registration.objects.filter(pk=registered.pk).update(mosaic_to_sem=[[1.0, 0, -200], [0, 1, 0], [0, 0, 1]])
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 64}, format="json")
    run_job("imaging.PairSet", response.json()["id"], pairs_work)
    body = api(operator).get(f"/api/pair-sets/{response.json()['id']}/").json()
    assert body["status"] == JobStatus.FAILED
    assert body["failure_reason"] == ("No tile of 64 px fits the registered overlap with enough structure: 12 tiles "
                                      "outside the registered overlap. Try smaller tiles.")


def cut(registration, *, tile_px, boxes, pixel_size_nm=32.5):
    """A finished pair set of ``registration`` with a pair per (x, y, split) in ``boxes`` (files of a byte: staging
    only links them)."""
    pair_set = PairSet.objects.create(registration=registration, pixel_size_nm=pixel_size_nm, tile_px=tile_px,
                                      stride_px=tile_px, status=JobStatus.SUCCEEDED)
    for number, (x, y, split) in enumerate(boxes):
        for side in ("lr", "hr"):
            path = absolute(f"pairs/{pair_set.pk}/{number:05d}_{side}.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0")
        ImagePair.objects.create(registration=registration, pair_set=pair_set, box_x=x, box_y=y, box_size=tile_px,
                                 pixel_size_nm=pixel_size_nm, split=split,
                                 lr_image=f"pairs/{pair_set.pk}/{number:05d}_lr.png",
                                 hr_image=f"pairs/{pair_set.pk}/{number:05d}_hr.png")
    return pair_set


@pytest.mark.django_db
def test_a_run_trains_on_one_pair_set_of_each_registration(api, registered, project, operator, tmp_path,
                                                           django_capture_on_commit_callbacks):
    """Two sets of one registration cover the same place: the test tile of the 64 px set at (64, 0) lies
    inside the training tile of the 128 px set at (0, 0). A run takes one set (the newest finished by
    default), so no test tile overlaps a training tile; both at once are refused."""
    from mlcore.jobs import stage_pairs

    older = cut(registered, tile_px=64, boxes=[(0, 0, "train"), (64, 0, "test"), (0, 64, "train")])
    newer = cut(registered, tile_px=128, boxes=[(0, 0, "train")])

    def start(**choice):
        with django_capture_on_commit_callbacks(execute=False):
            return api(operator).post("/api/training-runs/", {"project": project.pk, "name": "one set",
                                                              "registrations": [registered.pk], **choice,
                                                              "config": {"crop_px": 64}}, format="json")

    response = start()
    assert response.status_code == 201, response.json()
    assert response.json()["pair_sets"] == [newer.pk]
    assert stage_pairs(TrainingRun.objects.get(pk=response.json()["id"]), tmp_path / "newest") == (128, 32.5)
    response = start(pair_sets=[older.pk])
    assert response.status_code == 201 and response.json()["pair_sets"] == [older.pk]
    stage_pairs(TrainingRun.objects.get(pk=response.json()["id"]), tmp_path / "older")
    assert len(list((tmp_path / "older" / "lr").iterdir())) == 2  # the 64 px set's two training pairs
    both = start(pair_sets=[older.pk, newer.pk])
    assert both.status_code == 400 and both.json()["errors"][0]["field"] == "pair_sets"
    assert "choose one" in both.json()["errors"][0]["message"]


@pytest.mark.django_db
def test_pair_sets_of_two_registrations_whose_splits_overlap_are_refused(api, registered, project, operator,
                                                                        django_capture_on_commit_callbacks):
    """A second registration of the same SEM image onto the same mosaic (a redo): its training tile lies over
    the first one's test tile, so training on both is refused; one of another place is taken."""
    redo = Registration.objects.create(mosaic=registered.mosaic, sem_image=registered.sem_image, method="landmarks",
                                       landmarks=CORNERS, status=JobStatus.SUCCEEDED, mosaic_to_sem=np.eye(3).tolist())
    first = cut(registered, tile_px=64, boxes=[(0, 0, "train"), (64, 0, "test")])
    elsewhere = cut(redo, tile_px=64, boxes=[(128, 128, "train")])

    def start():
        with django_capture_on_commit_callbacks(execute=False):
            return api(operator).post("/api/training-runs/", {"project": project.pk, "name": "two",
                                                              "registrations": [registered.pk, redo.pk],
                                                              "config": {"crop_px": 64}}, format="json")

    assert sorted(start().json()["pair_sets"]) == [first.pk, elsewhere.pk]
    cut(redo, tile_px=64, boxes=[(96, 32, "train")])  # the redo's newest set: over the first's test tile
    refused = start()
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "registrations"
    assert "a test tile of one overlaps a training tile of the other" in refused.json()["errors"][0]["message"]


def registration_of_another_scan(sample, sem, *, to_sem=None, instrument=None, origin_nm=(0.0, 0.0)):
    """A succeeded registration of ``sem`` onto the mosaic of a new scan of ``sample`` (its pixels the fixture's)."""
    scan = plan_scan(sample=sample, name="again", instrument=instrument, plan=dict(
        origin_x_nm=0, origin_y_nm=0, size_x_nm=1000, size_y_nm=1000, overlap=0.3, exposure_ms=10,
        contact_setpoint_nm=20))
    mosaic = Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED, image="m/mosaic.tif", width=SIZE,
                                   height=SIZE, pixel_size_nm=32.5, origin_x_nm=origin_nm[0], origin_y_nm=origin_nm[1])
    return Registration.objects.create(mosaic=mosaic, sem_image=sem, method="landmarks", landmarks=CORNERS,
                                       status=JobStatus.SUCCEEDED,
                                       mosaic_to_sem=np.eye(3).tolist() if to_sem is None else to_sem)


def start_training(api, operator, project, registrations, capture):
    with capture(execute=False):
        return api(operator).post("/api/training-runs/", {"project": project.pk, "name": "both",
                                                          "registrations": [r.pk for r in registrations],
                                                          "config": {"crop_px": 64}}, format="json")


@pytest.mark.django_db
def test_pair_sets_of_two_mosaics_whose_tiles_show_one_place_of_an_sem_image_are_refused(
        api, registered, project, operator, django_capture_on_commit_callbacks):
    """One SEM image registered to two mosaics, the second's pixel x at the SEM's x + 100: its training tile at
    (0, 0) shows the SEM pixels of the first's test tile at (100, 0). One at (0, 100) shows others."""
    other = registration_of_another_scan(registered.mosaic.scan.sample, registered.sem_image,
                                         to_sem=[[1.0, 0, 100], [0, 1, 0], [0, 0, 1]])
    cut(registered, tile_px=64, boxes=[(100, 0, "test"), (0, 128, "train")])
    cut(other, tile_px=64, boxes=[(0, 100, "train")])
    response = start_training(api, operator, project, [registered, other], django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.json()
    cut(other, tile_px=64, boxes=[(0, 0, "train")])  # the newest set: over the first's test tile in the SEM image
    refused = start_training(api, operator, project, [registered, other], django_capture_on_commit_callbacks)
    assert refused.status_code == 400, refused.json()
    assert refused.json()["errors"][0]["message"].endswith(
        "are cut from one SEM image, and a test tile of one overlaps a training tile of the other; train on one of "
        "these registrations.")


@pytest.mark.django_db
def test_pair_sets_of_two_scans_of_one_place_on_a_sample_are_refused(api, registered, project, operator,
                                                                      django_capture_on_commit_callbacks):
    """Two scans on one instrument, the second's mosaic 64 px (2080 nm) right of the first's on the stage, each
    registered to its own SEM image: the second's training tile at (0, 0) is the stage area of the first's test
    tile at (64, 0). Another sample's scan with the same numbers is another place."""
    from instruments.models import Instrument

    instrument = Instrument.objects.create(project=project, name="bench", sim_seed=1)
    sample = registered.mosaic.scan.sample
    first = registration_of_another_scan(sample, registered.sem_image, instrument=instrument)
    second_sem = SEMImage.objects.create(project=project, name="sem 2", image="s/sem.tif", width=SIZE, height=SIZE,
                                         pixel_size_nm=32.5, pixel_size_source="metadata")
    elsewhere = registration_of_another_scan(Sample.objects.create(project=project, name="chip 2"), second_sem,
                                             instrument=instrument, origin_nm=(64 * 32.5, 0.0))
    same_place = registration_of_another_scan(sample, second_sem, instrument=instrument, origin_nm=(64 * 32.5, 0.0))
    cut(first, tile_px=64, boxes=[(64, 0, "test"), (0, 128, "train")])
    for registration in (elsewhere, same_place):
        cut(registration, tile_px=64, boxes=[(0, 0, "train")])
    response = start_training(api, operator, project, [first, elsewhere], django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.json()
    refused = start_training(api, operator, project, [first, same_place], django_capture_on_commit_callbacks)
    assert refused.status_code == 400, refused.json()
    assert "are cut from the same place on one sample, and a test tile" in refused.json()["errors"][0]["message"]


@pytest.mark.django_db
def test_asking_for_what_a_job_has_not_made_yet_is_a_conflict_or_not_found(api, registered, project, operator,
                                                                           viewer):
    queued = PairSet.objects.create(registration=registered, pixel_size_nm=32.5, tile_px=64, stride_px=64)
    response = api(viewer).get(f"/api/pair-sets/{queued.pk}/export/")
    assert response.status_code == 409 and response.json()["code"] == "invalid_state"
    assert "is queued: only finished pairs can be exported" in response.json()["detail"]
    run = TrainingRun.objects.create(project=project, name="new", config={}, total_steps=4)
    response = api(viewer).get(f"/api/training-runs/{run.pk}/samples/0")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_crops_larger_than_the_tiles_are_refused_on_crop(api, registered, project, operator):
    small = cut(registered, tile_px=64, boxes=[(0, 0, "train"), (64, 0, "test")])
    response = api(operator).post("/api/training-runs/", {"project": project.pk, "name": "big crops",
                                                          "registrations": [registered.pk]}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0] == {
        "field": "config.crop_px", "code": "invalid",
        "message": f"Crops of 256 px do not fit the 64 px tiles of pair set {small.pk}: at most 64 px."}
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_a_run_without_registrations_or_name_is_told_what_to_do(api, project, operator):
    response = api(operator).post("/api/training-runs/", {"project": project.pk, "name": " ", "registrations": []},
                                  format="json")
    assert response.status_code == 400
    assert {e["field"]: e["message"] for e in response.json()["errors"]} == {
        "name": "Give the run a name.", "registrations": "Tick at least one registration to train on."}


@pytest.mark.django_db
def test_tiles_side_by_side_in_an_sem_image_through_a_rotated_registration_do_not_overlap(
        api, registered, project, operator, django_capture_on_commit_callbacks):
    # the second mosaic registered at 4°: its tile's centre lands 128 px right of the first's test tile, edge to
    # edge; the box around its rotated corners reached 4 px into the test tile and the sets were refused
    angle = np.radians(4.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = np.array([192.0, 64.0]) - rotation @ np.array([264.0, 264.0])
    to_sem = np.eye(3)
    to_sem[:2, :2], to_sem[:2, 2] = rotation, shift
    other = registration_of_another_scan(registered.mosaic.scan.sample, registered.sem_image, to_sem=to_sem.tolist())
    cut(registered, tile_px=128, boxes=[(0, 0, "test"), (0, 128, "train")])
    cut(other, tile_px=128, boxes=[(200, 200, "train")])
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/training-runs/", {
            "project": project.pk, "name": "side by side", "registrations": [registered.pk, other.pk],
            "config": {"crop_px": 64}}, format="json")
    assert response.status_code == 201, response.json()



class _Killed(BaseException):
    """kill -9 of the worker: nothing after it runs, not even the job's own failure handling."""


class _Worker:
    """training_work as a worker runs it: dies once step ``dies_at`` is recorded, and keeps the run (and which of
    ``files`` are left) as it was when the job said it resumed."""

    def __init__(self, *, dies_at=None, files=()):
        self.dies_at, self.files, self.resumed = dies_at, files, None

    def __call__(self, run, progress):
        def report(fraction, message="", **extra):
            progress(fraction, message, **extra)
            if self.dies_at is not None and extra.get("step") == self.dies_at:
                raise _Killed

        def event(type, **payload):
            progress.event(type, **payload)
            if type == "training.resumed":
                self.resumed = TrainingRun.objects.get(pk=run.pk), [p for p in self.files if p.exists()]

        report.event = event
        return training_work(run, report)


@pytest.fixture
def trainable(api, registered, project, operator, django_capture_on_commit_callbacks, monkeypatch):
    """``start(steps)``: a queued tiny run (32 px crops, 1 block × 4 features) on real pairs, a sample each step."""
    import mlcore.jobs

    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/pair-sets/", {"registration": registered.pk, "tile_px": 64,
                                                          "stride_px": 64, "test_fraction": 0}, format="json")
    run_job("imaging.PairSet", response.json()["id"], pairs_work)
    configured = mlcore.jobs.experiment_config
    monkeypatch.setattr(mlcore.jobs, "experiment_config",
                        lambda settings, **kw: configured(settings, **kw).replace(train__sample_every=1))

    def start(steps):
        settings = {"steps": steps, "crop_px": 32, "batch_size": 2, "blocks": 1, "features": 4, "seed": 1}
        with django_capture_on_commit_callbacks(execute=False):
            response = api(operator).post("/api/training-runs/", {"project": project.pk, "name": "tiny",
                                                                  "registrations": [registered.pk], "config": settings},
                                          format="json")
        assert response.status_code == 201, response.json()
        return TrainingRun.objects.get(pk=response.json()["id"])
    return start


@pytest.mark.django_db
@pytest.mark.parametrize("steps, killed_at, checkpoint, note", [
    (12, 5, 3, "Resumed from the checkpoint at step 3 of 12; steps 4–5, done after it, are trained again."),
    (8, 1, 0, "No checkpoint was saved before the run stopped at step 1: training starts again from step 1."),
])
def test_a_run_killed_mid_training_resumes_from_its_checkpoint_with_nothing_after_it_kept(
        api, trainable, operator, viewer, django_capture_on_commit_callbacks, settings, steps, killed_at, checkpoint,
        note):
    """The worker killed (kill -9) between checkpoints (every steps/4), the run reaped to failed, then resumed: the
    losses and samples of the steps after the checkpoint, sample files too, go back to it (to nothing without one),
    the run and its page say where it goes on from, and the finished run has each step once."""
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone

    from ssumweb.jobs import reap_stale
    from ssumweb.models import Event

    run = trainable(steps)
    with pytest.raises(_Killed):
        run_job("mlcore.TrainingRun", run.pk, _Worker(dies_at=killed_at))
    run.refresh_from_db()
    assert run.status == JobStatus.RUNNING and run.step == killed_at
    lost_samples = [absolute(f"training/{run.pk}/samples/step{s:07d}.png") for s in range(checkpoint + 1, killed_at + 1)]
    assert all(p.is_file() for p in lost_samples)
    assert reap_stale(now=timezone.now() + timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_S + 1)) == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(f"/api/training-runs/{run.pk}/resume/")
    assert response.status_code == 200 and response.json()["status"] == JobStatus.QUEUED, response.json()
    worker = _Worker(files=lost_samples)
    run_job("mlcore.TrainingRun", run.pk, worker)

    resumed, files_left = worker.resumed
    assert resumed.step == checkpoint and [e["step"] for e in resumed.loss_history] == list(range(1, checkpoint + 1))
    assert resumed.samples == [f"training/{run.pk}/samples/step{s:07d}.png" for s in range(1, checkpoint + 1)]
    assert files_left == [] and resumed.resume_note == note
    event = Event.objects.get(topic=f"trainingrun.{run.pk}", type="training.resumed")
    assert event.payload == {"step": checkpoint, "samples": len(resumed.samples), "note": note}

    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.failure_reason
    assert run.step == steps and [e["step"] for e in run.loss_history] == list(range(1, steps + 1))
    assert run.samples == [f"training/{run.pk}/samples/step{s:07d}.png" for s in range(1, steps + 1)]
    assert all(absolute(p).is_file() for p in run.samples)
    # a sample made again after the checkpoint sits at its old index: browsers revalidate it rather than keep it
    first = api(viewer).get(f"/api/training-runs/{run.pk}/samples/{checkpoint}/")
    assert first.status_code == 200 and "immutable" not in first["Cache-Control"] and "max-age=0" in first["Cache-Control"]
    same = api(viewer).get(f"/api/training-runs/{run.pk}/samples/{checkpoint}/", HTTP_IF_NONE_MATCH=first["ETag"])
    assert same.status_code == 304
    assert api(viewer).get(f"/api/training-runs/{run.pk}/").json()["resume_note"] == note
    client = Client()
    client.force_login(viewer)
    assert note in client.get(f"/training/{run.pk}/").content.decode()  # the page still says where it went on from


@pytest.mark.django_db
def test_a_run_cancelled_mid_training_keeps_a_checkpoint_of_its_last_step(trainable, django_capture_on_commit_callbacks):
    from mlcore.checkpoint import checkpoint_step, latest_checkpoint
    from ssumweb.jobs import request_cancel

    run = trainable(12)  # a periodic checkpoint every 3 steps

    def cancel_at_step_5(run, progress):
        def report(fraction, message="", **extra):
            if extra.get("step") == 5:
                request_cancel(TrainingRun.objects.get(pk=run.pk))
            progress(fraction, message, **extra)

        report.event = progress.event
        return training_work(run, report)

    run_job("mlcore.TrainingRun", run.pk, cancel_at_step_5)
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED and run.step == 5
    assert checkpoint_step(latest_checkpoint(absolute(f"training/{run.pk}/checkpoints"))) == 5


@pytest.mark.django_db
@pytest.mark.parametrize("checkpoint, note", [
    (10, "Resumed from the checkpoint at step 10 of 40; step 11, done after it, is trained again."),
    (11, "Resumed from the checkpoint at step 11 of 40."),
])
def test_resuming_a_run_that_recorded_steps_twice_keeps_each_step_once(project, checkpoint, note):
    """A run resumed before the cut (history 1…8, 5…11, a sample at each step, one of them twice) stopped at step 11:
    resumed from its checkpoint it keeps each step up to it once, in order, and tells the user where it went on
    from. Checkpoints are found by name, so empty files stand in for them."""
    steps = [*range(1, 9), *range(5, 12)]
    run = TrainingRun.objects.create(project=project, name="twice", config={}, total_steps=40, step=11,
                                     loss_history=[{"step": s, "g_total": float(n)} for n, s in enumerate(steps)])
    run.samples = [f"training/{run.pk}/samples/step{s:07d}.png" for s in steps]
    run.save(update_fields=["samples"])
    for path in [*run.samples, f"training/{run.pk}/checkpoints/step_000000005.pt",
                 f"training/{run.pk}/checkpoints/step_{checkpoint:09d}.pt"]:
        absolute(path).parent.mkdir(parents=True, exist_ok=True)
        absolute(path).touch()
    rewind_to_checkpoint(run, Progress(run))
    run.refresh_from_db()
    assert [e["step"] for e in run.loss_history] == list(range(1, checkpoint + 1))
    assert [e["g_total"] for e in run.loss_history[4:8]] == [8, 9, 10, 11]  # the later of the two
    assert run.samples == [f"training/{run.pk}/samples/step{s:07d}.png" for s in range(1, checkpoint + 1)]
    assert sorted(p.name for p in absolute(f"training/{run.pk}/samples").iterdir()) == [
        f"step{s:07d}.png" for s in range(1, checkpoint + 1)]
    assert run.step == checkpoint and run.resume_note == note and run.message == note
