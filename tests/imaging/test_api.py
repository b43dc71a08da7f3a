"""The catalogue API: who may do what, and clear 4xx answers for bad input."""
import pytest

from imaging.models import Mosaic, PairSet, Registration, Sample, Scan, SEMImage
from instruments.models import Instrument
from ssumweb.models import JobStatus

PLAN = dict(name="scan 1", origin_x_nm=5000, origin_y_nm=5000, size_x_nm=30000, size_y_nm=20000, overlap=0.3,
            exposure_ms=20, contact_setpoint_nm=50)


@pytest.fixture
def sample(project):
    return Sample.objects.create(project=project, name="IC chip")


@pytest.fixture
def instrument(project):
    return Instrument.objects.create(project=project, name="SSUM 1")


def fields_of(response):
    return {e["field"] for e in response.json()["errors"]}


@pytest.mark.django_db
def test_anonymous_requests_get_401_json(api, sample):
    response = api(None).get("/api/samples/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_lists_show_only_the_users_projects(api, sample, other_project, viewer):
    Sample.objects.create(project=other_project, name="not yours")
    response = api(viewer).get("/api/samples/")
    assert response.status_code == 200
    assert [s["name"] for s in response.json()["results"]] == ["IC chip"]


@pytest.mark.django_db
def test_non_members_get_404_for_objects(api, sample, outsider):
    assert api(outsider).get(f"/api/samples/{sample.pk}/").status_code == 404


@pytest.mark.django_db
def test_viewer_reads_but_cannot_create(api, project, viewer):
    response = api(viewer).post("/api/samples/", {"project": project.pk, "name": "new"}, format="json")
    assert response.status_code == 403
    assert not Sample.objects.filter(name="new").exists()


@pytest.mark.django_db
def test_operator_creates_sample_and_duplicate_name_is_named(api, project, operator):
    first = api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer 3"}, format="json")
    assert first.status_code == 201
    again = api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer 3"}, format="json")
    assert again.status_code == 400 and fields_of(again) == {"name"}


@pytest.mark.django_db
def test_renaming_a_sample_to_a_name_the_project_has_is_named(api, project, operator):
    first = api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer 3"}, format="json").json()
    second = api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer 4"}, format="json").json()
    for name in ("wafer 3", " wafer 3 ", ""):
        response = api(operator).patch(f"/api/samples/{second['id']}/", {"name": name}, format="json")
        assert response.status_code == 400 and fields_of(response) == {"name"}, response.json()
    assert Sample.objects.get(pk=second["id"]).name == "wafer 4"
    kept = api(operator).patch(f"/api/samples/{first['id']}/", {"name": " wafer 3 ", "description": "B"}, format="json")
    assert kept.status_code == 200 and kept.json()["name"] == "wafer 3" and kept.json()["description"] == "B"


@pytest.mark.django_db
def test_a_sample_name_taken_at_the_same_moment_is_named_not_a_500(api, project, operator, monkeypatch):
    # two requests both checked the name before either inserted: the database's constraint decides
    api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer 5"}, format="json")
    monkeypatch.setattr("imaging.services._sample_name", lambda project, name, exclude=None: name.strip())
    again = api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer 5"}, format="json")
    assert again.status_code == 400 and fields_of(again) == {"name"}, again.json()


@pytest.mark.django_db
def test_operator_plans_a_scan(api, sample, instrument, operator):
    response = api(operator).post("/api/scans/", {**PLAN, "sample": sample.pk, "instrument": instrument.pk}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "planned" and body["frames_total"] == body["rows"] * body["cols"] > 1


@pytest.mark.django_db
def test_a_plan_preview_gives_the_grid_the_scan_would_get_and_creates_nothing(api, sample, instrument, operator,
                                                                               viewer):
    body = {**PLAN, "sample": sample.pk, "instrument": instrument.pk}
    preview = api(operator).post("/api/scans/preview/", body, format="json")
    assert preview.status_code == 200, preview.json()
    assert Scan.objects.count() == 0
    created = api(operator).post("/api/scans/", body, format="json").json()
    grid = preview.json()
    assert (grid["rows"], grid["cols"], grid["frames"]) == (created["rows"], created["cols"], created["frames_total"])
    assert grid["step_nm"] == pytest.approx(created["step_nm"])
    stack = api(operator).post("/api/scans/preview/", {**body, "z_planes": 51, "z_step_nm": 1500}, format="json")
    assert (stack.json()["z_planes"], stack.json()["z_span_nm"]) == (51, 75_000)
    # checked as a plan is: the field at fault is named; and only those who may plan may preview
    bad = api(operator).post("/api/scans/preview/", {**body, "overlap": 1.0}, format="json")
    assert bad.status_code == 400 and "overlap" in fields_of(bad)
    assert api(viewer).post("/api/scans/preview/", body, format="json").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("field, value", [
    ("size_x_nm", -100), ("overlap", 1.0), ("step_nm", 50000), ("exposure_ms", "fast"), ("contact_setpoint_nm", None),
    ("origin_y_nm", 1e12),
])
def test_bad_plan_values_are_400_naming_the_field_and_nothing_is_created(api, sample, operator, field, value):
    response = api(operator).post("/api/scans/", {**PLAN, "sample": sample.pk, field: value}, format="json")
    assert response.status_code == 400
    assert field in fields_of(response)
    assert Scan.objects.count() == 0


@pytest.mark.django_db
def test_a_billion_frames_is_refused(api, sample, project, operator):
    long_travel = Instrument.objects.create(project=project, name="long stage", travel_x_nm=1e12, travel_y_nm=1e12)
    response = api(operator).post("/api/scans/", {**PLAN, "sample": sample.pk, "instrument": long_travel.pk,
                                                  "size_x_nm": 3e10, "size_y_nm": 3e10}, format="json")
    assert response.status_code == 400
    assert "frames" in response.json()["detail"]


@pytest.mark.django_db
def test_malformed_json_is_400(api, operator):
    response = api(operator).post("/api/scans/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.django_db
def test_unknown_sample_is_named(api, operator):
    response = api(operator).post("/api/scans/", {**PLAN, "sample": 999999}, format="json")
    assert response.status_code == 400 and fields_of(response) == {"sample"}


@pytest.mark.django_db
def test_scan_in_another_project_cannot_be_planned_on_my_sample(api, sample, other_project, operator):
    foreign = Instrument.objects.create(project=other_project, name="theirs")
    response = api(operator).post("/api/scans/", {**PLAN, "sample": sample.pk, "instrument": foreign.pk}, format="json")
    assert response.status_code == 400 and fields_of(response) == {"instrument"}


@pytest.mark.django_db
def test_actions_follow_the_state_machine(api, sample, instrument, operator, viewer):
    scan_id = api(operator).post("/api/scans/", {**PLAN, "sample": sample.pk, "instrument": instrument.pk},
                                 format="json").json()["id"]
    assert api(viewer).post(f"/api/scans/{scan_id}/start/").status_code == 403
    paused = api(operator).post(f"/api/scans/{scan_id}/pause/")
    assert paused.status_code == 409 and paused.json()["code"] == "invalid_state"
    started = api(operator).post(f"/api/scans/{scan_id}/start/")
    assert started.status_code == 200 and started.json()["requested_action"] == "start"
    aborted = api(operator).post(f"/api/scans/{scan_id}/abort/")
    assert aborted.json()["status"] == "aborted"
    assert api(operator).post(f"/api/scans/{scan_id}/resume/").status_code == 409


@pytest.mark.django_db
def test_scan_events_replay_over_http(api, sample, operator):
    scan_id = api(operator).post("/api/scans/", {**PLAN, "sample": sample.pk}, format="json").json()["id"]
    api(operator).post(f"/api/scans/{scan_id}/abort/")
    events = api(operator).get(f"/api/scans/{scan_id}/events/?after=1").json()["results"]
    assert [(e["seq"], e["status"]) for e in events] == [(2, "aborted")]
    assert api(operator).get(f"/api/scans/{scan_id}/events/?after=x").status_code == 400


@pytest.mark.django_db
def test_admins_manage_members_operators_cannot(api, project, lab_admin, operator, outsider):
    assert api(operator).post(f"/api/projects/{project.pk}/members/", {"username": "mallory", "role": "viewer"},
                              format="json").status_code == 403
    added = api(lab_admin).post(f"/api/projects/{project.pk}/members/", {"username": "mallory", "role": "viewer"},
                                format="json")
    assert added.status_code == 201
    assert api(outsider).get(f"/api/projects/{project.pk}/").status_code == 200
    last_admin = api(lab_admin).patch(f"/api/projects/{project.pk}/members/ada/", {"role": "viewer"}, format="json")
    assert last_admin.status_code == 400 and fields_of(last_admin) == {"role"}


@pytest.mark.django_db
def test_token_auth_for_scripts(api, viewer, sample):
    from rest_framework.test import APIClient

    key = api(viewer).post("/api/token/").json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/samples/").status_code == 200


@pytest.mark.django_db
def test_schema_and_docs_need_login(client, viewer):
    refused = client.get("/api/schema/")
    assert refused.status_code in (401, 403)
    assert refused["Content-Type"].startswith("application/json")
    assert refused.json()["code"] == "not_authenticated"
    client.force_login(viewer)
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("width, preview_width", [(700, 512), (300, 300)])
def test_a_frame_is_served_as_tiff_thumbnail_and_preview_to_members_only(api, sample, instrument, operator, viewer,
                                                                         outsider, width, preview_width):
    import cv2
    import numpy as np
    from django.utils import timezone

    from imaging.imageio import write_image16
    from imaging.models import Frame
    from ssumweb.media import absolute

    scan = Scan.objects.create(project=sample.project, sample=sample, instrument=instrument, name="s", origin_x_nm=0,
                               origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                               exposure_ms=5, contact_setpoint_nm=20, rows=1, cols=1)
    image = np.tile(np.linspace(1000, 40000, width, dtype=np.uint16), (200, 1))
    rel = f"scans/{scan.pk}/frames/000000.tif"
    write_image16(absolute(rel), image, pixel_size_nm=32.5)
    frame = Frame.objects.create(scan=scan, index=0, row=0, col=0, commanded_x_nm=0, commanded_y_nm=0,
                                 measured_x_nm=0, measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5,
                                 image=rel, width=width, height=200)
    for kind, expected_width in [("thumbnail", 160), ("preview", preview_width)]:
        url = f"/api/frames/{frame.pk}/{kind}/"
        response = api(viewer).get(url)
        assert response.status_code == 200 and response["Content-Type"] == "image/jpeg", kind
        jpeg = cv2.imdecode(np.frombuffer(b"".join(response.streaming_content), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert jpeg.shape[1] == expected_width and jpeg[:, 0].mean() < 20 < 235 < jpeg[:, -1].mean(), kind
        assert api(outsider).get(url).status_code == 404 and api(None).get(url).status_code == 401
    tiff = api(operator).get(f"/api/frames/{frame.pk}/image/")
    assert tiff.status_code == 200 and tiff["Content-Type"] == "image/tiff"


@pytest.mark.django_db
def test_a_sample_can_be_bare_silicon_for_a_simulated_bench_and_bad_surfaces_are_named(api, project, operator):
    created = api(operator).post("/api/samples/", {"project": project.pk, "name": "wafer",
                                                   "surface": "bare_silicon"}, format="json")
    assert created.status_code == 201 and created.json()["surface"] == "bare_silicon"
    assert Sample.objects.get(name="wafer").surface == "bare_silicon"
    plain = api(operator).post("/api/samples/", {"project": project.pk, "name": "chip 2"}, format="json")
    assert plain.json()["surface"] == "chip"
    bad = api(operator).post("/api/samples/", {"project": project.pk, "name": "glass", "surface": "glass"},
                             format="json")
    assert bad.status_code == 400 and fields_of(bad) == {"surface"}
    assert not Sample.objects.filter(name="glass").exists()
    # a sample recorded as a chip that turns out to be the lab's bare wafer
    chip = Sample.objects.get(name="chip 2")
    assert api(operator).patch(f"/api/samples/{chip.pk}/", {"surface": "bare_silicon"}, format="json").status_code == 200
    assert Sample.objects.get(pk=chip.pk).surface == "bare_silicon"


@pytest.fixture
def registration(sample):
    scan = Scan.objects.create(project=sample.project, sample=sample, name="s1", origin_x_nm=0, origin_y_nm=0,
                               size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5,
                               contact_setpoint_nm=20, rows=2, cols=2)
    mosaic = Mosaic.objects.create(scan=scan, pixel_size_nm=32.5, width=300, height=200, status=JobStatus.SUCCEEDED)
    sem = SEMImage.objects.create(project=sample.project, sample=sample, name="sem", image="s/a.tif", width=256,
                                  height=256, pixel_size_nm=20, pixel_size_source="metadata")
    return Registration.objects.create(mosaic=mosaic, sem_image=sem, method="landmarks", status=JobStatus.SUCCEEDED,
                                       mosaic_to_sem=[[1.6, 0, 0], [0, 1.6, 0], [0, 0, 1]])


@pytest.mark.django_db
@pytest.mark.parametrize("options, field, message", [
    ({"tile_px": 64, "stride_px": 1000}, "stride_px", "at most 256 px (4 × the tile size)"),
    ({"stride_px": 4096}, "stride_px", "at most 2048 px (4 × the tile size)"),  # 512 px tiles by default
    ({"tile_px": 256}, "tile_px", "do not fit the mosaic (300 × 200 px at 32.5 nm)"),
    ({"tile_px": 64, "pixel_size_nm": 130}, "tile_px", "(75 × 50 px at 130 nm)"),
    ({"tile_px": 32, "pixel_size_nm": 10_000}, "pixel_size_nm", "leaves no pixel of the mosaic"),
    ({"test_fraction": 1.0}, "test_fraction", ""),
    ({"tile_px": 64, "pixel_size_nm": 0.1}, "pixel_size_nm", "over the limit of"),  # 325× finer: 6.3 Gpx
])
def test_pair_settings_the_cut_cannot_take_are_400_naming_the_field_and_nothing_is_created(
        api, registration, operator, options, field, message):
    response = api(operator).post("/api/pair-sets/", {"registration": registration.pk, **options}, format="json")
    assert response.status_code == 400, response.json()
    assert fields_of(response) == {field} and message in response.json()["errors"][0]["message"]
    assert not PairSet.objects.exists()


@pytest.mark.django_db
def test_a_registration_says_how_large_its_overlap_is_and_which_tile_size_fits_it(api, registration, operator):
    # 256 SEM px at 1.6 SEM px per mosaic px: a 160 px footprint (with the resampling's reach), 64 px tiles fit 4
    body = api(operator).get(f"/api/registrations/{registration.pk}/").json()
    width, height = body["overlap_px"]
    assert 160 <= width <= 165 and 160 <= height <= 165 and body["suggested_tile_px"] == 64
    Registration.objects.filter(pk=registration.pk).update(mosaic_to_sem=None, status=JobStatus.RUNNING)
    body = api(operator).get("/api/registrations/").json()["results"][0]
    assert body["overlap_px"] is None and body["suggested_tile_px"] is None


@pytest.mark.django_db
def test_the_largest_stride_and_tile_the_cut_takes_are_queued(api, registration, operator):
    response = api(operator).post("/api/pair-sets/", {"registration": registration.pk, "tile_px": 200,
                                                      "stride_px": 800}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["stride_px"] == 800


@pytest.mark.django_db
def test_a_project_of_others_reads_as_one_that_does_not_exist(api, project, other_project, operator):
    # an outsider told 404 for one id and "no such project" for another learnt which ids exist
    for url, body in (("/api/samples/", {"name": "probe"}), ("/api/training-runs/", {"name": "probe", "registrations": [1]})):
        answers = []
        for pk in (other_project.pk, 987654):
            response = api(operator).post(url, {**body, "project": pk}, format="json")
            errors = response.json()["errors"]
            answers.append((response.status_code, errors[0]["field"], errors[0]["message"].replace(str(pk), "N")))
        assert answers[0] == answers[1] == (400, "project", "No project with id N among yours."), answers
