"""Pages through Django's test client: login required, other projects' objects are 404, pages render their parts."""
import json
import re

import pytest
from django.test import Client

from imaging.models import Mosaic, Sample, Scan
from instruments.models import Instrument
from ssumweb import events
from ssumweb.models import JobStatus

pytestmark = pytest.mark.django_db


def login(user):
    client = Client()
    client.force_login(user)
    return client


def config(response, name):
    html = response.content.decode()
    start = html.index(f'id="{name}"')
    start = html.index(">", start) + 1
    return json.loads(html[start:html.index("</script>", start)])


@pytest.fixture
def scan(project, operator):
    instrument = Instrument.objects.create(project=project, name="sim")
    sample = Sample.objects.create(project=project, name="chip")
    return Scan.objects.create(project=project, sample=sample, instrument=instrument, name="s1", origin_x_nm=0,
                               origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5,
                               contact_setpoint_nm=20, rows=2, cols=2)


@pytest.fixture
def mosaic(scan):
    return Mosaic.objects.create(scan=scan, pixel_size_nm=32.5, width=1000, height=800, pyramid="p/mosaic.dzi",
                                 status=JobStatus.SUCCEEDED)


@pytest.mark.parametrize("junk", ["%C2%B2", "99999999999999999999999", "-1", "1.5"])
def test_ids_in_query_strings_that_are_no_ids_find_nothing_rather_than_fail(scan, mosaic, operator, junk):
    # "²".isdigit() is true and int() refuses it; a 23-digit id overflowed the database's integer (both a 500)
    client = login(operator)
    pages = {"/samples/?project=": 200, "/sem/?project=": 200, "/sem/upload/?project=": 200, "/sem/upload/?sample=": 200,
             "/training/?registration=": 200, "/training/?pair_set=": 200, "/viewer/?mosaic=": 404,
             f"/viewer/?mosaic={mosaic.pk}&sem_image=": 404}
    for page, expected in pages.items():
        assert client.get(page + junk).status_code == expected, page + junk


def test_pages_need_login(scan, mosaic):
    for url in [f"/scans/{scan.pk}/", f"/samples/{scan.sample_id}/", f"/viewer/?mosaic={mosaic.pk}"]:
        response = Client().get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_other_projects_objects_are_404(scan, mosaic, other_project, django_user_model):
    from ssumweb.models import Membership, Role

    stranger = django_user_model.objects.create_user("sid", password="x")
    Membership.objects.create(project=other_project, user=stranger, role=Role.ADMIN)
    client = login(stranger)
    for url in [f"/scans/{scan.pk}/", f"/samples/{scan.sample_id}/", f"/viewer/?mosaic={mosaic.pk}",
                "/viewer/?sem=999", "/viewer/?mosaic=abc"]:
        assert client.get(url).status_code == 404, url


def test_scan_monitor_carries_the_seq_to_resume_from_and_the_operator_flag(scan, operator, viewer):
    events.publish(events.topic_for("scan", scan.pk), "scan.state", status="planned", reason="")
    events.publish(events.topic_for("scan", scan.pk), "scan.state", status="running", reason="")
    response = login(operator).get(f"/scans/{scan.pk}/")
    assert response.status_code == 200
    cfg = config(response, "monitor-config")
    assert cfg["after_seq"] == 2 and cfg["can_operate"] is True and cfg["instrument_id"] == scan.instrument_id
    assert cfg["frames_total"] == 4
    assert b'id="live-canvas"' in response.content and b'data-scan-action="pause"' in response.content
    as_viewer = login(viewer).get(f"/scans/{scan.pk}/")
    assert config(as_viewer, "monitor-config")["can_operate"] is False
    assert b'disabled title="Only operators' in as_viewer.content


def test_scan_controls_follow_the_servers_rules(scan, operator):
    from imaging.services import USER_ACTIONS

    cfg = config(login(operator).get(f"/scans/{scan.pk}/"), "monitor-config")
    assert {action: set(states) for action, states in cfg["actions"].items()} == USER_ACTIONS
    assert "failed" in cfg["actions"]["resume"]  # a failed scan goes on where it stopped
    assert sorted(cfg["ending_states"]) == ["aborted", "completed"]


def test_live_view_says_when_the_instruments_worker_is_offline(scan, operator):
    from django.utils import timezone

    html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert "sim is offline: its hardware worker is not running" in html
    assert f"python manage.py hardware_worker {scan.instrument_id}" in html
    assert re.search(r'<canvas id="live-canvas"[^>]* hidden>', html)  # no black box
    Instrument.objects.filter(pk=scan.instrument_id).update(heartbeat_at=timezone.now())
    response = login(operator).get(f"/scans/{scan.pk}/")
    html = response.content.decode()
    assert "Connecting to the camera" in html and not re.search(r'<canvas id="live-canvas"[^>]* hidden>', html)
    assert config(response, "monitor-config")["instrument_online"] is True


def test_an_ended_scan_shows_its_own_last_readouts_not_the_instruments_live_view(scan, operator):
    from django.utils import timezone

    from imaging.models import Frame

    for index in range(2):
        Frame.objects.create(scan=scan, index=index, row=0, col=index, commanded_x_nm=0, commanded_y_nm=0,
                             measured_x_nm=1000.0 * index, measured_y_nm=5.0, measured_z_nm=80.0, focus_nm=-1200.0,
                             deflection_nm=20.0 + index, captured_at=timezone.now(), exposure_ms=5,
                             image=f"f{index}.tif", width=64, height=64)
    running = config(login(operator).get(f"/scans/{scan.pk}/"), "monitor-config")
    assert running["ended"] is False and running["last_readout"]["deflection_nm"] == 21.0
    Scan.objects.filter(pk=scan.pk).update(status="completed")
    response = login(operator).get(f"/scans/{scan.pk}/")
    html = response.content.decode()
    assert 'id="live-canvas"' not in html and "The scan has ended, so the instrument's live view is not shown" in html
    assert re.search(rf'<img id="last-frame"[^>]* src="/api/frames/{Frame.objects.get(scan=scan, index=1).pk}/preview/?"', html)
    assert "Readouts at the last frame" in html
    # a frame in the grid opens its own page (picture, scale, where and how it was taken), not a bare picture
    assert re.search(rf'<a data-index="0"[^>]* href="/scans/{scan.pk}/frames/0/"', html)
    cfg = config(response, "monitor-config")
    assert cfg["ended"] is True
    assert cfg["last_readout"] == {"x_nm": 1000.0, "y_nm": 5.0, "z_nm": 80.0, "focus_nm": -1200.0,
                                   "deflection_nm": 21.0}
    Scan.objects.filter(pk=scan.pk).update(status="failed")  # a failed scan may go on: the live view stays
    assert 'id="live-canvas"' in login(operator).get(f"/scans/{scan.pk}/").content.decode()


def test_the_plan_counts_one_frame_as_one_frame(scan, operator):
    Scan.objects.filter(pk=scan.pk).update(rows=1, cols=1)
    html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert "<dt>Grid</dt><dd>1 × 1 = 1 frame</dd>" in html
    Scan.objects.filter(pk=scan.pk).update(rows=2, cols=3)
    assert "<dt>Grid</dt><dd>2 × 3 = 6 frames</dd>" in login(operator).get(f"/scans/{scan.pk}/").content.decode()


def test_scan_subtitle_puts_a_separator_only_between_parts_it_shows(scan, operator):
    def subtitle():
        html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
        line = re.search(r"</h1>\s*<p[^>]*>(.*?)</p>", html, re.S).group(1)
        return " ".join(re.sub(r"<[^>]+>", " ", line).split())

    assert subtitle() == "Sample chip · instrument sim"
    Scan.objects.filter(pk=scan.pk).update(status="paused", status_reason="Paused by a user.")
    assert subtitle() == "Sample chip · instrument sim · Paused by a user."
    Scan.objects.filter(pk=scan.pk).update(instrument=None, status="running", status_reason="")
    assert subtitle() == "Sample chip"


def test_scan_page_offers_bare_silicon_scans_of_the_same_optics_as_flat_field_calibrations(scan, operator, viewer,
                                                                                          project):
    from django.utils import timezone

    from imaging.models import Frame

    wafer = Sample.objects.create(project=project, name="wafer", surface="bare_silicon")

    def scan_with_frames(name, instrument, size, sample=wafer):
        other = Scan.objects.create(project=project, sample=sample, instrument=instrument, name=name,
                                    origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3,
                                    overlap=0.3, exposure_ms=5, contact_setpoint_nm=20, rows=1, cols=2)
        for index in range(2):
            Frame.objects.create(scan=other, index=index, row=0, col=index, commanded_x_nm=0, commanded_y_nm=0,
                                 measured_x_nm=0, measured_y_nm=0,
                                 captured_at=timezone.now(), exposure_ms=5, image=f"f{name}{index}.tif",
                                 width=size, height=size)
        return other

    scan_with_frames("own frames", scan.instrument, 512)
    Frame.objects.filter(scan__name="own frames").update(scan=scan)  # this scan's own frames
    scan_with_frames("bare silicon", scan.instrument, 512)
    scan_with_frames("smaller window", scan.instrument, 256)
    scan_with_frames("other bench", Instrument.objects.create(project=project, name="other"), 512)
    chip = scan_with_frames("another chip scan", scan.instrument, 512, sample=scan.sample)
    html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    options = html[html.index('id="stitch-flatfield"'):html.index("</select>", html.index('id="stitch-flatfield"'))]
    assert "Calibration on bare silicon: bare silicon (2 frames)" in options
    assert "smaller window" not in options and "other bench" not in options and ": s1 " not in options
    assert "another chip scan" not in options  # a chip is no flat field
    # a chip scan does not offer itself as a flat field; a scan of bare silicon does
    assert 'id="calibration-line"' not in html
    as_viewer = login(viewer).get(f"/scans/{scan.pk}/").content.decode()
    assert 'id="stitch-form"' not in as_viewer and 'id="calibration-toggle"' not in as_viewer
    bare = Scan.objects.get(name="bare silicon")
    html = login(operator).get(f"/scans/{bare.pk}/").content.decode()
    assert "This scan of bare silicon can serve as sim's flat field" in html and "Use this scan as the flat field" in html
    assert 'id="translate-section"' not in html and config(login(operator).get(f"/scans/{bare.pk}/"),
                                                           "monitor-config")["reference"] is True
    # the instrument's calibration comes selected, and stays offered even if it is not of a bare-silicon sample
    Instrument.objects.filter(pk=scan.instrument_id).update(flatfield_calibration=bare)
    html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert f'<option value="calibration:{bare.pk}" selected>' in html
    html = login(operator).get(f"/scans/{bare.pk}/").content.decode()
    assert "This scan is sim's flat field" in html and "Stop using it" in html
    Instrument.objects.filter(pk=scan.instrument_id).update(flatfield_calibration=chip)
    html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert f'<option value="calibration:{chip.pk}" selected>' in html
    assert "Stop using it" in login(operator).get(f"/scans/{chip.pk}/").content.decode()


def _add_frames(scan, n, size=512):
    from django.utils import timezone

    from imaging.models import Frame

    for index in range(n):
        Frame.objects.create(scan=scan, index=index, row=0, col=index, commanded_x_nm=0, commanded_y_nm=0,
                             measured_x_nm=0, measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5,
                             image=f"f{scan.pk}-{index}.tif", width=size, height=size)


def _flatfield_options(html):
    """The stitch form's flat fields as (value, label, selected), as the page draws them."""
    from html import unescape

    start = html.index('id="stitch-flatfield"')
    options = re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)</option>', html[start:html.index("</select>", start)])
    return [(value, unescape(label), bool(selected)) for value, selected, label in options]


def test_a_page_opened_before_the_first_frame_can_ask_for_the_flat_fields_a_reload_offers(scan, operator, viewer,
                                                                                          project):
    # The page is drawn before the scan has frames (their size is unknown, so no calibration is offered); when the
    # scan ends its monitor asks the API, which answers what a reload draws: the instrument's calibration selected.
    wafer = Sample.objects.create(project=project, name="wafer", surface="bare_silicon")
    bare = Scan.objects.create(project=project, sample=wafer, instrument=scan.instrument, name="bare silicon",
                               origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                               exposure_ms=5, contact_setpoint_nm=20, rows=1, cols=3)
    _add_frames(bare, 3)
    Instrument.objects.filter(pk=scan.instrument_id).update(flatfield_calibration=bare)
    client = login(operator)
    drawn_early = _flatfield_options(client.get(f"/scans/{scan.pk}/").content.decode())
    assert drawn_early == [("estimate", "Estimated from this scan's frames", True),
                           ("none", "None (the frames as captured)", False)]
    _add_frames(scan, 2)
    reloaded = _flatfield_options(client.get(f"/scans/{scan.pk}/").content.decode())
    assert (f"calibration:{bare.pk}", "Calibration on bare silicon: bare silicon (3 frames)", True) in reloaded
    answer = client.get(f"/api/scans/{scan.pk}/flatfield-choices/")
    assert answer.status_code == 200
    assert [(c["value"], c["label"], c["selected"]) for c in answer.json()["choices"]] == reloaded
    assert login(viewer).get(f"/api/scans/{scan.pk}/flatfield-choices/").status_code == 200  # a read, as the page is


def test_sample_page_offers_the_plan_form_to_operators_only(scan, operator, viewer):
    assert b'id="plan-form"' in login(operator).get(f"/samples/{scan.sample_id}/").content
    wafer = Sample.objects.create(project=scan.project, name="wafer", surface="bare_silicon")
    assert b"bare silicon: a flat-field reference" in login(viewer).get(
        f"/samples/{wafer.pk}/").content
    page = login(viewer).get(f"/samples/{scan.sample_id}/").content
    assert b'id="plan-form"' not in page and b"Only operators" in page


def _plan_defaults(html):
    """The plan form's first values, as numbers, by the inputs' names."""
    values = dict(re.findall(r'name="(origin_[xy]_nm|size_[xy]_nm|overlap)"[^>]* value="([^"]*)"', html))
    return {name: float(value) for name, value in values.items()}


def test_the_default_plan_is_a_small_mosaic_of_a_chip_and_a_flat_field_of_bare_silicon(scan, operator):
    from imaging.services import preview_plan

    instrument = scan.instrument
    Instrument.objects.filter(pk=instrument.pk).update(fov_diameter_nm=14250)  # as a bench records its sphere
    instrument.refresh_from_db()
    common = dict(exposure_ms=5, contact_setpoint_nm=20)
    # a chip: 3 × 3 frames to stitch (one frame had no overlaps to place it by), within the scanner's travel
    values = _plan_defaults(login(operator).get(f"/samples/{scan.sample_id}/").content.decode())
    chip = preview_plan({**values, **common}, instrument)
    assert (chip.rows, chip.cols, chip.overlap) == (3, 3, 0.4)
    # bare silicon: frames side by side, 3 or more, so that the wafer's dust drops out of their median
    wafer = Sample.objects.create(project=scan.project, name="wafer", surface="bare_silicon")
    html = login(operator).get(f"/samples/{wafer.pk}/").content.decode()
    flat = preview_plan({**_plan_defaults(html), **common}, instrument)
    assert flat.frames_total >= 3 and flat.overlap == 0 and (flat.rows, flat.cols) == (2, 2)
    assert "A flat field wants 3 or more frames a few fields of view apart" in html
    # a scanner whose travel cannot hold the area at 20 µm from its corner: the area is centred
    Instrument.objects.filter(pk=instrument.pk).update(travel_x_nm=30_000, travel_y_nm=30_000)
    values = _plan_defaults(login(operator).get(f"/samples/{scan.sample_id}/").content.decode())
    assert preview_plan({**values, **common}, Instrument.objects.get(pk=instrument.pk)).frames_total == 9
    assert values["origin_x_nm"] + values["size_x_nm"] <= 30_000


def test_a_flat_field_of_fewer_than_3_frames_warns_that_dust_stays(scan, operator, project):
    wafer = Sample.objects.create(project=project, name="wafer", surface="bare_silicon")
    bare = Scan.objects.create(project=project, sample=wafer, instrument=scan.instrument, name="bare silicon",
                               origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                               exposure_ms=5, contact_setpoint_nm=20, rows=1, cols=2, status="completed")
    _add_frames(bare, 2)

    def warned():
        html = login(operator).get(f"/scans/{bare.pk}/").content.decode()
        assert "Use this scan as the flat field" in html
        found = re.search(r'<p id="calibration-few"[^>]*?( hidden)?>([^<]*)</p>', html)
        return not found.group(1) and found.group(2)

    assert "dust on the wafer will not drop out of this flat field" in warned()
    Scan.objects.filter(pk=bare.pk).update(rows=2, cols=2, status="running")  # two of four so far: more to come
    assert not warned()
    Scan.objects.filter(pk=bare.pk).update(status="aborted")  # ...and no more
    assert warned()
    bare.frames.all().delete()
    _add_frames(bare, 3)
    assert not warned()


def test_viewer_lists_the_mosaic_layer_with_its_pixel_size(mosaic, viewer):
    response = login(viewer).get(f"/viewer/?mosaic={mosaic.pk}")
    assert response.status_code == 200
    layers = config(response, "viewer-config")["layers"]
    assert [layer["key"] for layer in layers] == ["mosaic"]
    assert layers[0]["pixel_size_nm"] == 32.5 and layers[0]["dzi_url"] == f"/api/mosaics/{mosaic.pk}/dzi"


def test_viewer_outlines_the_stitched_frames_flagging_the_unsure_ones(mosaic, viewer):
    from imaging.stitching import USEFUL_FOV_FRACTION

    assert config(login(viewer).get(f"/viewer/?mosaic={mosaic.pk}"), "viewer-config")["frames"] == []
    Mosaic.objects.filter(pk=mosaic.pk).update(report={
        "frame_shape": [512, 512], "positions_px": [[0.0, 0.0], [300.5, 2.0]], "uncertain_frames": [1],
        "frame_index": [4, 7]})
    response = login(viewer).get(f"/viewer/?mosaic={mosaic.pk}")
    frames = config(response, "viewer-config")["frames"]
    radius = USEFUL_FOV_FRACTION * mosaic.scan.instrument.fov_diameter_nm / 2 / 32.5
    assert frames == [{"index": 4, "x": 255.5, "y": 255.5, "r": pytest.approx(radius), "uncertain": False},
                      {"index": 7, "x": 556.0, "y": 257.5, "r": pytest.approx(radius), "uncertain": True}]
    assert b"Outline the stitched frames" in response.content
    assert "placed with low confidence (1)" in response.content.decode()
    Mosaic.objects.filter(pk=mosaic.pk).update(report={**Mosaic.objects.get(pk=mosaic.pk).report, "uncertain_frames": []})
    page = login(viewer).get(f"/viewer/?mosaic={mosaic.pk}").content.decode()
    assert "Every frame placed with confidence." in page and "placed with low confidence" not in page
    Mosaic.objects.filter(pk=mosaic.pk).update(report={**Mosaic.objects.get(pk=mosaic.pk).report, "uncertain_frames": [1]})

    # stitched with the field of view of the day: a later edit of the instrument does not move the outlines
    Mosaic.objects.filter(pk=mosaic.pk).update(report={**Mosaic.objects.get(pk=mosaic.pk).report,
                                                       "fov_radius_px": 180.0})
    instrument = mosaic.scan.instrument
    instrument.fov_diameter_nm *= 2
    instrument.save(update_fields=["fov_diameter_nm"])
    frames = config(login(viewer).get(f"/viewer/?mosaic={mosaic.pk}"), "viewer-config")["frames"]
    assert [frame["r"] for frame in frames] == [180.0, 180.0]


def test_viewer_maps_a_registered_sem_through_the_registration(mosaic, project, viewer):
    from imaging.models import Registration, SEMImage

    sem = SEMImage.objects.create(project=project, name="sem", width=2000, height=1600, pixel_size_nm=5,
                                  pixel_size_source="file", pyramid="s/sem.dzi")
    matrix = [[6.5, 0, 10], [0, 6.5, -4], [0, 0, 1]]
    reg = Registration.objects.create(mosaic=mosaic, sem_image=sem, method="automatic", mosaic_to_sem=matrix,
                                      status=JobStatus.SUCCEEDED)
    layers = config(login(viewer).get(f"/viewer/?sem={reg.pk}"), "viewer-config")["layers"]
    assert [layer["key"] for layer in layers] == ["mosaic", "sem"]
    assert layers[1]["transform"] == matrix and layers[1]["pixel_size_nm"] == 5


def test_demo_button_only_on_a_demo_project_and_disabled_for_viewers(project, operator, viewer):
    Instrument.objects.create(project=project, name="sim")
    assert b'id="run-demo"' not in login(operator).get(f"/projects/{project.pk}/").content
    project.name = "Demo project"
    project.save()
    assert b'id="run-demo"' in login(operator).get(f"/projects/{project.pk}/").content
    page = login(viewer).get(f"/projects/{project.pk}/").content
    assert b'id="run-demo"' not in page and b"Only operators of this project can run the demo." in page


def _scans(scan, n):
    """n more scans of the same sample, named s-000..., one of them running."""
    fields = {f: getattr(scan, f) for f in ["project", "sample", "instrument", "origin_x_nm", "origin_y_nm", "size_x_nm",
                                             "size_y_nm", "step_nm", "overlap", "exposure_ms", "contact_setpoint_nm",
                                             "rows", "cols"]}
    for i in range(n):
        Scan.objects.create(name=f"s-{i:03d}", status="running" if i == 7 else scan.status, **fields)


def test_project_page_lists_its_scans_with_search_status_filter_and_pages(scan, project, viewer):
    _scans(scan, 14)
    client = login(viewer)
    first = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Scans <span class=\"muted\">(15)</span>" in first and "Page 1 of 2" in first
    assert first.count('class="card scan-card"') == 12
    only = client.get(f"/projects/{project.pk}/?status=running").content.decode()
    assert only.count('class="card scan-card"') == 1 and "s-007" in only
    found = client.get(f"/projects/{project.pk}/?q=s-01").content.decode()
    assert found.count('class="card scan-card"') == 4  # s-010 … s-013
    second = client.get(f"/projects/{project.pk}/?q=s-&page=2").content.decode()
    assert "Page 2 of 2" in second and "q=s-&amp;page=1" in second  # the filter survives paging


def test_project_page_without_scans_says_what_to_do_next(project, viewer):
    Sample.objects.create(project=project, name="chip")
    page = login(viewer).get(f"/projects/{project.pk}/").content.decode()
    assert "No scans yet. Open a sample below to plan a scan on it." in page


def test_project_page_offers_operators_a_form_to_add_a_sample(project, operator, viewer):
    empty = login(operator).get(f"/projects/{project.pk}/").content.decode()
    assert 'id="sample-form"' in empty and "Add a sample below first" in empty
    assert '<option value="bare_silicon">Bare silicon (a flat-field reference)</option>' in empty
    as_viewer = login(viewer).get(f"/projects/{project.pk}/").content.decode()
    assert 'id="sample-form"' not in as_viewer and "An operator of this project adds them." in as_viewer


def test_dashboard_searches_and_pages_projects(viewer, django_user_model):
    from ssumweb.models import Membership, Project, Role

    for i in range(13):
        Membership.objects.create(project=Project.objects.create(name=f"Group {i:02d}"), user=viewer, role=Role.VIEWER)
    client = login(viewer)
    page = client.get("/").content.decode()
    assert 'id="q"' in page and "Page 1 of 2" in page
    found = client.get("/?q=group 1").content.decode()
    assert "Group 10" in found and "Group 12" in found and "Group 09" not in found and "Nanofab lab" not in found
    assert "No project matches" in client.get("/?q=zzz").content.decode()


def _frames(scan, count=3):
    from django.utils import timezone

    from imaging.models import Frame

    return [Frame.objects.create(scan=scan, index=k, row=k // 2, col=k % 2, commanded_x_nm=5000.0 * k,
                                 commanded_y_nm=0, measured_x_nm=5000.0 * k + 12.5, measured_y_nm=-3.0,
                                 measured_z_nm=80.0, focus_nm=49_999_900.0, deflection_nm=21.0,
                                 captured_at=timezone.now(), exposure_ms=5, image=f"f{k}.tif", width=512, height=512)
            for k in range(count)]


def test_a_frame_has_a_page_with_its_picture_scale_and_readouts(scan, viewer):
    Instrument.objects.filter(pk=scan.instrument_id).update(pixel_size_nm=32.5)
    first, second, _ = _frames(scan)
    page = login(viewer).get(f"/scans/{scan.pk}/frames/1/").content.decode()
    assert "Frame 2" in page and f'href="/scans/{scan.pk}/"' in page
    assert re.search(rf'src="/api/frames/{second.pk}/preview/?"', page) and re.search(rf'href="/api/frames/{second.pk}/image/?"', page)
    # neighbours, counted from 1 as the grid counts them
    assert f'href="/scans/{scan.pk}/frames/0/" rel="prev">← Frame 1' in page
    assert f'href="/scans/{scan.pk}/frames/2/" rel="next">Frame 3 →' in page
    # 512 px × 32.5 nm = 16.64 µm across: a 2 µm bar, 12.02 % of the picture
    assert re.search(r'id="frame-scalebar" style="width: 12\.02%"><div class="bar"></div>'
                     r'<span class="label">2 µm</span>', page)
    for words in ("row 1, column 2", "x 5.000 y 0.000 µm", "x 5.013 y -0.003 z 0.080 µm", "49.9999 mm", "21.0 nm",
                  "512 × 512 px at 32.5 nm/px (16.640 × 16.640 µm)", "5 ms"):
        assert words in page, words
    assert "frame-stitched" not in page  # not stitched yet
    Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED, pyramid="p/mosaic.dzi",
                          report={"positions_px": [[0, 0]] * 3, "frame_index": [0, 1, 2], "uncertain_frames": [1],
                                  "placed_by_stage": [2]})
    client = login(viewer)
    assert "Placed with low confidence" in client.get(f"/scans/{scan.pk}/frames/1/").content.decode()
    assert "Placed by the stage alone" in client.get(f"/scans/{scan.pk}/frames/2/").content.decode()
    assert "Placed surely" in client.get(f"/scans/{scan.pk}/frames/0/").content.decode()


def test_the_scan_page_lists_its_other_stitches_to_open_and_compare(scan, viewer):
    client = login(viewer)
    older = Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED, pyramid="p/mosaic.dzi", pixel_size_nm=32.5,
                                  width=100, height=100, report={"mean_residual_px": 0.04, "max_residual_px": 0.11,
                                                                 "uncertain_frames": [3], "flatfield": "calibration"})
    assert "other-mosaics" not in client.get(f"/scans/{scan.pk}/").content.decode()  # the one the page shows
    failed = Mosaic.objects.create(scan=scan, status=JobStatus.FAILED, failure_reason="The scan has no frames.")
    page = client.get(f"/scans/{scan.pk}/").content.decode()  # the page still shows the older one: a failure is other
    assert "Other stitches of this scan (1)" in page and "The scan has no frames." in page
    Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED, pyramid="q/mosaic.dzi", width=100, height=100)
    Mosaic.objects.create(scan=scan, status=JobStatus.RUNNING)  # a stitch under way is the page's own
    page = client.get(f"/scans/{scan.pk}/").content.decode()
    assert "Other stitches of this scan (2)" in page
    assert "frames agree to 0.04 px on average (0.11 px at worst); 1 placed with low confidence" in page
    assert f'href="/viewer/?mosaic={older.pk}">open in the viewer' in page
    assert f'href="/viewer/?mosaic={failed.pk}"' not in page
    assert page.index(older.label) > page.index("The scan has no frames.")  # newest first


def test_a_frame_page_is_for_the_projects_members_and_frames_that_exist(scan, outsider, viewer):
    _frames(scan, 1)
    assert login(outsider).get(f"/scans/{scan.pk}/frames/0/").status_code == 404
    assert login(viewer).get(f"/scans/{scan.pk}/frames/5/").status_code == 404
    assert Client().get(f"/scans/{scan.pk}/frames/0/").status_code == 302  # to the login page


def test_the_viewer_with_nothing_to_show_offers_the_latest_mosaics(mosaic, viewer):
    page = login(viewer).get("/viewer/").content.decode()
    assert 'id="viewer-empty"' in page and f'href="?mosaic={mosaic.pk}">Mosaic {mosaic.pk}: chip / s1, stitched' in page


def test_the_viewer_says_why_a_mosaic_it_was_asked_for_is_not_there_yet(scan, viewer):
    client = login(viewer)
    running = Mosaic.objects.create(scan=scan, status=JobStatus.RUNNING, message="Blending the mosaic…")
    page = client.get(f"/viewer/?mosaic={running.pk}").content.decode()
    assert f"Mosaic {running.pk} is not ready to view yet (blending the mosaic…)" in page
    assert f'href="/scans/{scan.pk}/"' in page and "pyramid" not in page.lower().split("<script")[0]
    failed = Mosaic.objects.create(scan=scan, status=JobStatus.FAILED, failure_reason="frame 3 has shape (64, 60)")
    page = client.get(f"/viewer/?mosaic={failed.pk}").content.decode()
    assert f"Mosaic {failed.pk} was not finished (failed: frame 3 has shape (64, 60))" in page


def test_a_page_not_found_says_so_in_the_sites_frame(viewer):
    response = login(viewer).get("/viewer/?mosaic=999")
    page = response.content.decode()
    assert response.status_code == 404 and "Go to the dashboard" in page and "Log out" in page


def test_the_dashboard_says_which_flat_field_each_instrument_uses(scan, viewer):
    from django.utils import timezone

    from imaging.jobs import set_flatfield_calibration
    from imaging.models import Frame

    instrument = scan.instrument
    assert "No flat field yet" in login(viewer).get("/").content.decode()
    bare = Scan.objects.create(project=scan.project, sample=Sample.objects.create(project=scan.project, name="wafer",
                                                                                  surface="bare_silicon"),
                               instrument=instrument, name="wafer flat", origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4,
                               size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5, contact_setpoint_nm=20,
                               rows=1, cols=1)
    Frame.objects.create(scan=bare, index=0, row=0, col=0, commanded_x_nm=0, commanded_y_nm=0, measured_x_nm=0,
                         measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5, image="f.tif", width=64, height=64)
    set_flatfield_calibration(instrument, bare)
    assert f'Flat field: <a href="/scans/{bare.pk}/">wafer flat</a>' in login(viewer).get("/").content.decode()


def test_the_dashboard_says_whether_each_instruments_stage_places_the_frames(scan, viewer):
    instrument = scan.instrument
    page = login(viewer).get("/").content.decode()
    assert "stage repeatability not set: the overlaps place the frames" in page
    type(instrument).objects.filter(pk=instrument.pk).update(stage_repeatability_nm=2.0)
    assert "stage repeats within 2 nm: mosaics go where it puts the frames" in login(viewer).get("/").content.decode()


def test_viewer_says_which_counts_the_mosaics_grey_levels_stand_for(mosaic, viewer):
    """A line profile read 0–255 of screen grey; the pyramid's display window (display.json) turns it into counts."""
    import numpy as np

    from imaging.imageio import DisplayWindow
    from imaging.jobs import build_pyramid_for

    layers = config(login(viewer).get(f"/viewer/?mosaic={mosaic.pk}"), "viewer-config")["layers"]
    assert layers[0]["display_window"] is None  # no display.json to say: the profile reads display grey
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    mosaic.pyramid = build_pyramid_for(image, DisplayWindow(1200.0, 3400.0), "m/1", pixel_size_nm=32.5)
    mosaic.save(update_fields=["pyramid"])
    layers = config(login(viewer).get(f"/viewer/?mosaic={mosaic.pk}"), "viewer-config")["layers"]
    assert layers[0]["display_window"] == {"low": 1200.0, "high": 3400.0, "unit": "camera counts"}


def test_an_operator_can_cancel_the_stitch_of_an_ended_scan(scan, operator, viewer):
    """A re-stitch queued or running had no Cancel button, though the API cancels it."""
    def cancel_button(user):
        html = login(user).get(f"/scans/{scan.pk}/").content.decode()
        match = re.search(r'<button type="button" id="stitch-cancel"[^>]*>', html)
        return match and match[0]

    Scan.objects.filter(pk=scan.pk).update(status="completed")
    assert 'hidden' in cancel_button(operator)  # nothing stitching: there for the monitor to show, hidden
    done = Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED)
    again = Mosaic.objects.create(scan=scan, status=JobStatus.QUEUED)
    button = cancel_button(operator)
    assert f'data-mosaic="{again.pk}"' in button and "hidden" not in button, button
    assert cancel_button(viewer) is None  # only operators cancel
    # while the scan runs, its live mosaic grows with it: nothing to cancel
    again.delete()
    Mosaic.objects.filter(pk=done.pk).update(status=JobStatus.RUNNING, live=True)
    Scan.objects.filter(pk=scan.pk).update(status="running")
    assert "hidden" in cancel_button(operator)


def test_scan_monitor_knows_the_scale_of_the_live_camera_and_mosaic(scan, operator):
    """The live camera and live mosaic had no scale bar: the page carries the instrument's pixel size and how many of
    its pixels the camera's frame (its region of interest) spans."""
    cfg = config(login(operator).get(f"/scans/{scan.pk}/"), "monitor-config")
    assert (cfg["pixel_size_nm"], cfg["camera_width_px"]) == (32.5, 512)
    Instrument.objects.filter(pk=scan.instrument_id).update(pixel_size_nm=40.0, camera_roi=[100, 120, 400, 420])
    cfg = config(login(operator).get(f"/scans/{scan.pk}/"), "monitor-config")
    assert (cfg["pixel_size_nm"], cfg["camera_width_px"]) == (40.0, 300)
    html = login(operator).get(f"/scans/{scan.pk}/").content.decode()
    assert 'id="live-scalebar"' in html and 'id="mosaic-live-scalebar"' in html
