"""The lab flow in real Chromium against the real ASGI server and the simulated instrument."""
import re
import time

import pytest
from playwright.sync_api import expect

from imaging.models import Mosaic, Sample, Scan
from instruments.models import Instrument
from mlcore.models import TrainedModel
from ssumweb.models import JobStatus, Membership, Role

from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def lab(live_url, django_user_model):
    from ssumweb.models import Project

    project = Project.objects.create(name="Demo lab")
    user = django_user_model.objects.create_user(username="otto", password="pw-otto")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    instrument = Instrument.objects.create(project=project, name="sim bench", sim_seed=3)
    sample = Sample.objects.create(project=project, name="chip", sim_seed=3)
    # listed in the scan page's "Translate" form, which waits hidden until the mosaic is stitched
    TrainedModel.objects.create(project=project, name="cyclegan-a", weights="models/a.pt", pixel_size_nm=50.0)
    from instruments.worker import HardwareWorker

    worker = HardwareWorker(instrument.pk, poll_s=0.05).start()
    instrument.refresh_from_db()  # the worker records the bench's real field of view
    yield {"url": live_url, "project": project, "instrument": instrument, "sample": sample}
    worker.stop()


def log_in(page, url):
    page.goto(f"{url}/login/")
    screenshot(page, "login")
    page.get_by_label("Username").fill("otto")
    page.get_by_label("Password").fill("pw-otto")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_scan_live_then_mosaic_and_synchronised_viewer(page, lab):
    url, instrument = lab["url"], lab["instrument"]
    log_in(page, url)
    screenshot(page, "dashboard")
    # a desktop's width is used (every section was one card wide, a 230 px column): projects beside the instruments
    # and what runs now, the recent scans across the page; on a phone, one section under the other
    box = {name: page.locator("section", has=page.get_by_role("heading", name=name, exact=True)).bounding_box()
           for name in ("Projects", "Instruments", "Running now", "Recent scans")}
    assert box["Projects"]["x"] + box["Projects"]["width"] <= box["Instruments"]["x"], box
    assert box["Instruments"]["y"] == box["Projects"]["y"] and box["Running now"]["x"] == box["Instruments"]["x"], box
    assert box["Recent scans"]["width"] >= page.locator("main h1").bounding_box()["width"] - 1, box
    page.set_viewport_size({"width": 390, "height": 844})
    lefts = {page.locator("section", has=page.get_by_role("heading", name=name, exact=True)).bounding_box()["x"]
             for name in box}
    assert len(lefts) == 1, lefts
    page.set_viewport_size({"width": 1280, "height": 800})

    # Plan a 2 × 2 scan on the sample page; a bad value first shows its message beside the input.
    page.goto(f"{url}/samples/{lab['sample'].pk}/")
    side = instrument.fov_diameter_nm / 2**0.5
    page.get_by_label("Exposure (ms)").fill("-5")
    page.get_by_role("button", name="Plan scan").click()
    expect(page.locator(".field-error, .form-error").first).not_to_be_empty()
    screenshot(page, "sample-plan-error")
    expect(page.locator("#plan-preview")).to_contain_text("Not yet a plan: Exposure (ms):")
    page.get_by_label("Exposure (ms)").fill("5")
    page.get_by_label("Width (nm)").fill(str(int(side * 1.6)))
    page.get_by_label("Height (nm)").fill(str(int(side * 1.6)))
    # the grid the numbers give shows as they are typed
    expect(page.locator("#plan-preview")).to_contain_text("2 × 2 grid: 4 frames")
    # a Z-stack shows the focus travel it spans (the step is focus travel, not sample depth)
    page.get_by_label("Z planes").fill("51")
    page.get_by_label("Z step (nm of focus travel)").fill("1500")
    expect(page.locator("#plan-preview")).to_contain_text("4 frames, 51 planes each over 75.0 µm of focus travel")
    page.get_by_label("Z planes").fill("1")
    expect(page.locator("#plan-preview")).not_to_contain_text("planes each")
    page.get_by_role("button", name="Plan scan").click()
    page.wait_for_url(re.compile(r"/scans/\d+/$"))
    scan = Scan.objects.get(sample=lab["sample"])
    assert scan.frames_total == 4, (scan.size_x_nm, scan.size_y_nm, scan.step_nm, scan.overlap, scan.instrument_id)

    # Live frames change, progress reaches 100 %, the frame grid fills and the mosaic appears.
    canvas = page.locator("#live-canvas")
    expect(canvas).to_have_attribute("data-seq", re.compile(r"\d+"), timeout=20_000)
    first_seq = canvas.get_attribute("data-seq")
    expect(canvas).not_to_have_attribute("data-seq", first_seq, timeout=20_000)
    expect(page.locator("#progress-text")).to_contain_text("4 / 4 frames (100%)", timeout=60_000)
    expect(page.locator("#frame-grid img")).to_have_count(4)
    expect(page.locator("#scan-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator("#deflection")).not_to_have_text("—")
    # the scan has ended: the page stops following the instrument (its next scan is not this one's) and shows the
    # scan's own last frame in its place, as a reload does
    expect(page.get_by_role("heading", name="Last frame", exact=True)).to_be_visible()
    expect(page.locator("#last-frame-caption")).to_have_text(re.compile(r"^Frame 4 \(row 2, col \d\), captured "))
    expect(page.locator("#readouts-title")).to_have_text("Readouts at the last frame")
    if not Mosaic.objects.filter(scan=scan).exists():
        page.get_by_role("button", name="Stitch the mosaic").click()
    screenshot(page, "scan-monitor")
    try:  # the final stitch runs on the shared CPUs: give it two minutes
        page.locator("#mosaic-view .openseadragon-canvas").wait_for(state="attached", timeout=120_000)
    except Exception:
        pytest.skip("the final stitch of the mosaic did not finish within 2 minutes on this machine")
    screenshot(page, "scan-monitor-mosaic")
    final = Mosaic.objects.filter(scan=scan, status=JobStatus.SUCCEEDED).exclude(pyramid="")
    deadline = time.monotonic() + 120
    while not final.exists():
        if time.monotonic() > deadline:
            pytest.skip("the final stitch of the mosaic did not finish within 2 minutes on this machine")
        time.sleep(0.5)
    mosaic = final.latest("created_at")
    # ...and, without a reload, the page offers to translate the final mosaic
    expect(page.locator("#translate-form")).to_be_visible(timeout=20_000)
    expect(page.locator("#translate-needs-mosaic")).to_be_hidden()
    expect(page.locator("#translate-mosaic")).to_have_value(str(mosaic.pk))
    mosaic.refresh_from_db()  # named as the server names it on a reload
    expect(page.locator("#translate-mosaic option:checked")).to_have_text(mosaic.label)
    # ...with the stitching report in words, the frames it could not place surely outlined
    report = mosaic.report
    used = sum(1 for link in report["links"] if not link["dropped"])
    expect(page.locator("#stitch-report")).to_contain_text(f"4 frames placed from {used} of {len(report['links'])} overlaps")
    assert report["flatfield"] == "overlaps"  # estimated, then fitted to where the placed frames overlap
    expect(page.locator("#stitch-report")).to_contain_text("flat field fitted to where the frames overlap")
    expect(page.locator("#frame-grid a.uncertain")).to_have_count(len(report["uncertain_frames"]))
    # (as a deep chip's report would: the second and fourth frames stitched unsure, the third placed by the stage
    # alone, none of its overlaps having matched)
    Mosaic.objects.filter(pk=mosaic.pk).update(report={**report, "uncertain_frames": [1, 2, 3], "placed_by_stage": [2],
                                                       "frame_gain": [1.0, 1.042, 0.99, 0.97],
                                                       "edge_blur": "estimated", "edge_blur_px": 2.9})
    second, third, fourth = (report["frame_index"][k] for k in (1, 2, 3))
    page.reload()
    expect(page.locator("#live-canvas")).to_have_count(0)
    expect(page.get_by_role("heading", name="Last frame", exact=True)).to_be_visible()
    page.wait_for_function("document.getElementById('last-frame').naturalWidth > 0")
    expect(page.locator("#stage")).to_contain_text("µm")  # the last frame's readouts
    expect(page.locator("#stitch-report .warning")).to_contain_text(
        f"Frames {second + 1} and {fourth + 1} are placed with low confidence")  # counted from 1
    # what a rescan could change: a Z-stack where there was none, else more overlap than the scan had
    expect(page.locator("#stitch-report .warning")).to_contain_text(
        f"A Z-stack helps on deep chips (planes about 1 µm of focus travel apart, spanning the chip's depth), "
        f"and so does more overlap than this scan's {round(100 * scan.overlap)} %")
    expect(page.locator("#stitch-report .warning")).to_contain_text(
        f"Frame {third + 1} was placed by the stage alone (outlined below): none of its overlaps matched, so it sits "
        "where the stage put it")
    expect(page.locator("#frame-grid a.uncertain")).to_have_count(3)
    assert page.locator(f"#frame-grid a[data-index='{third}']").get_attribute("title").endswith(
        "placed by the stage alone: none of its overlaps matched")
    expect(page.locator("#stitch-report")).to_contain_text("one was 4.2 % brighter or darker than the rest")
    expect(page.locator("#stitch-report")).to_contain_text(  # the sphere's blur towards its rim, in px and nm
        f"The image was 2.9 px ({int(2.9 * report['pixel_size_nm'] + 0.5)} nm) blurrier (Gaussian σ) at the edge")
    expect(page.get_by_role("link", name="See them on the mosaic")).to_have_attribute(
        "href", f"/viewer/?mosaic={mosaic.pk}&frames=1")
    assert page.locator(f"#frame-grid a[data-index='{fourth}']").get_attribute("title").endswith(
        "placed with low confidence")
    screenshot(page, "scan-stitch-report")
    Scan.objects.filter(pk=scan.pk).update(z_planes=3)
    page.reload()
    expect(page.locator("#stitch-report .warning")).to_contain_text(
        "This scan already fused 3 planes per frame: rescanning with more overlap than its")
    # on a repeatable stage the frames went where it put them, mapped by the rotation and scale the overlaps measured:
    # the frame placed by the stage is no doubt (the stitcher does not count it uncertain), the others' low confidence is
    stage = {"rotation_deg": -0.3601, "scale": [1.0015, 0.999], "skew_deg": 0.001, "links_agreeing": 3,
             "links_measured": 5, "median_residual_px": 0.523}
    deep_chip_report = Mosaic.objects.get(pk=mosaic.pk).report
    Mosaic.objects.filter(pk=mosaic.pk).update(report={
        **Mosaic.objects.get(pk=mosaic.pk).report, "stage_repeatability_nm": 2.0, "uncertain_frames": [1, 3],
        "stage_calibration": {**stage, "believed": True}})
    page.reload()
    expect(page.locator("#stitch-report")).to_contain_text(
        "Placed where the stage put them (it repeats within 2 nm), turned by -0.36° — the camera against the scanner, "
        "its x axis +0.15 % and its y axis −0.10 % against the pixel size, as 3 of 5 overlaps measured it (they sit "
        "0.52 px from it, median).")
    expect(page.locator("#stitch-report .warning")).not_to_contain_text("placed by the stage alone")
    expect(page.locator("#frame-grid a.uncertain")).to_have_count(2)
    Mosaic.objects.filter(pk=mosaic.pk).update(report={
        **Mosaic.objects.get(pk=mosaic.pk).report, "stage_calibration": {**stage, "believed": False}})
    page.reload()
    expect(page.locator("#stitch-report .warning").first).to_contain_text(
        "The instrument's stage is said to repeat within 2 nm, but only 3 of 5 overlaps agree with where it put the "
        "frames, so the overlaps placed them instead. Check the instrument's stage repeatability, and its pixel size")
    Mosaic.objects.filter(pk=mosaic.pk).update(report=deep_chip_report)

    # A frame of the grid opens its own page: the picture with a scale bar, where and how it was taken, its neighbours
    page.locator("#frame-grid a[data-index='0']").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Frame 1 "))).to_be_visible()
    expect(page.locator("#frame-scalebar .label")).to_have_text(re.compile(r"^\d+ (nm|µm)$"))
    expect(page.locator("#frame-details")).to_contain_text("Contact force (deflection)")
    expect(page.locator("#frame-stitched")).to_contain_text(f"in mosaic {mosaic.pk}")  # the scan's live one, stitched
    page.wait_for_function("document.getElementById('frame-image').naturalWidth > 0")
    screenshot(page, "frame-page")
    page.get_by_role("link", name="Frame 2 →").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Frame 2 "))).to_be_visible()

    # The viewer: with two layers (the mosaic twice stands in until a translation exists) zooming one zooms the other.
    page.goto(f"{url}/viewer/?mosaic={mosaic.pk}")
    page.wait_for_selector("body[data-viewer-ready=true]")
    expect(page.locator(".scalebar .label").first).to_have_text(re.compile(r"\d+(\.\d+)? (nm|µm)"))
    # the stitched frames outlined on the mosaic, the three marked unsure above in amber
    page.get_by_label("Outline the stitched frames").check()
    expect(page.locator("#osd-mosaic .frame-outline")).to_have_count(4)
    expect(page.locator("#osd-mosaic .frame-outline.uncertain")).to_have_count(3)
    expect(page.locator(f"#osd-mosaic .frame-outline[data-index='{second}']")).to_have_text(str(second + 1))  # from 1
    page.wait_for_function("location.search.includes('frames=1')")
    screenshot(page, "viewer")
    page.wait_for_timeout(1000)  # let the opening "home" animation settle
    # Compare target zooms (getZoom(false)): the current one lags behind while the spring animates.
    before = page.evaluate("ssumViewers.mosaic.viewport.getZoom(false)")
    page.locator("#osd-mosaic").hover()
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    after = page.evaluate("ssumViewers.mosaic.viewport.getZoom(false)")
    assert after > before * 1.1
    page.wait_for_function("location.search.includes('z=')")
    assert "x=" in page.url and "layers=mosaic" in page.url
    assert not page.console_errors, page.console_errors


def test_scan_page_says_live_which_frames_matched_none_of_their_overlaps(page, live_url, django_user_model):
    import base64

    import cv2
    import numpy as np

    from imaging.services import scan_topic
    from ssumweb import events
    from ssumweb.models import Project

    project = Project.objects.create(name="Demo lab")
    user = django_user_model.objects.create_user(username="otto", password="pw-otto")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    sample = Sample.objects.create(project=project, name="chip")
    instrument = Instrument.objects.create(project=project, name="bench", pixel_size_nm=32.5)  # its worker is off
    scan = Scan.objects.create(project=project, sample=sample, instrument=instrument, name="deep chip",
                               origin_x_nm=0, origin_y_nm=0,
                               size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5,
                               contact_setpoint_nm=20, rows=2, cols=2, status="running")

    def jpeg_url(side, seed):
        image = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 255, (side, side), np.uint8), (0, 0), 3)
        return "data:image/jpeg;base64," + base64.b64encode(cv2.imencode(".jpg", image)[1].tobytes()).decode()

    log_in(page, live_url)
    page.goto(f"{live_url}/scans/{scan.pk}/")
    expect(page.locator("#scan-status")).to_have_text("running")
    page.wait_for_timeout(500)  # the page's scan websocket is open
    topic = scan_topic(scan.pk)
    for index, (row, col) in enumerate([(0, 0), (0, 1), (1, 1), (1, 0)]):
        events.publish(topic, "frame.saved", frame_id=100 + index, index=index, row=row, col=col, done=index + 1,
                       total=4, thumbnail_url=jpeg_url(64, index))
    expect(page.locator("#frame-grid img")).to_have_count(4)
    events.publish(topic, "mosaic.live", mosaic_id=1, frames=4, width=700, height=700, unmatched_frames=[2],
                   url=jpeg_url(350, 9))
    expect(page.locator("#mosaic-status")).to_have_text("Live mosaic: 4 frames placed (700×700 px).")
    # the live mosaic and the live camera have scale bars (they had none): the preview, scaled down from the mosaic's
    # 700 px, at the instrument's pixel size; the camera's 512 px frame, however small its preview
    from channels.layers import get_channel_layer

    from instruments.control import live_group
    from instruments.worker import send_from_thread

    send_from_thread(get_channel_layer(), live_group(instrument.pk), {
        "type": "live.frame", "jpeg": base64.b64decode(jpeg_url(320, 5).split(",")[1]), "seq": 1, "t": time.time()})
    expect(page.locator("#live-canvas")).to_have_attribute("data-seq", "1")
    for bar, image, width_px in (("#mosaic-live-scalebar", "#mosaic-live", 700), ("#live-scalebar", "#live-canvas", 512)):
        expect(page.locator(bar)).to_be_visible()
        expect(page.locator(f"{bar} .label")).to_have_text(re.compile(r"^\d+(\.\d+)? (nm|µm)$"))
        shown = page.locator(image).bounding_box()
        nm_per_px = float(page.locator(bar).get_attribute("data-nm-per-px"))
        assert nm_per_px == pytest.approx(32.5 * width_px / shown["width"], rel=0.01), (bar, nm_per_px, shown)
        box = page.locator(bar).bounding_box()
        assert shown["x"] <= box["x"] and box["y"] + box["height"] <= shown["y"] + shown["height"] + 1, (bar, box, shown)
    expect(page.locator("#stitch-report .warning")).to_contain_text(
        "Frame 3 matched none of its overlaps (outlined below): the live mosaic shows it where the stage put it")
    expect(page.locator("#frame-grid a.uncertain")).to_have_count(1)
    assert page.locator("#frame-grid a[data-index='2']").get_attribute("title").endswith(
        "matched none of its overlaps: placed by the stage for now")
    screenshot(page, "scan-live-unmatched")
    # a live mosaic started afresh (the worker restarted on a resumed scan) has none yet: the warning goes
    events.publish(topic, "mosaic.live", mosaic_id=1, frames=4, width=700, height=700, unmatched_frames=[],
                   url=jpeg_url(350, 10))
    expect(page.locator("#stitch-report")).to_be_hidden()
    expect(page.locator("#frame-grid a.uncertain")).to_have_count(0)
    assert page.locator("#frame-grid a[data-index='2']").get_attribute("title") == "Frame 3 (row 2, col 2)"  # from 1
    # a pause is the scan's state, with its reason beside it, not a fault
    events.publish(topic, "scan.state", status="paused", reason="Paused by a user.")
    expect(page.locator("#scan-status")).to_have_text("paused")
    expect(page.locator("#status-reason")).to_have_text("Paused by a user.")
    expect(page.locator("#faults")).to_have_text("None.")
    events.publish(topic, "scan.fault", reason="contact not reached")  # a fault is listed
    expect(page.locator("#faults li.error")).to_have_count(1)
    expect(page.locator("#faults")).to_contain_text("fault: contact not reached")


def test_stitching_with_a_bare_silicon_calibration_as_the_flat_field(page, live_url, django_user_model):
    import numpy as np
    from django.utils import timezone

    from imaging.imageio import write_image16
    from imaging.models import Frame
    from instruments.sim.dataset import simulate_scan
    from ssumweb.media import absolute
    from ssumweb.models import Project

    project = Project.objects.create(name="Demo lab")
    user = django_user_model.objects.create_user(username="otto", password="pw-otto")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    simulated = simulate_scan(seed=2, grid=(2, 2))
    instrument = Instrument.objects.create(project=project, name="sim bench", pixel_size_nm=simulated.pixel_size_nm,
                                           fov_diameter_nm=0.9 * simulated.frames.shape[1] * simulated.pixel_size_nm)
    chip = Sample.objects.create(project=project, name="chip")
    wafer = Sample.objects.create(project=project, name="wafer", surface="bare_silicon")

    def scan_of(name, images, nominal, sample=wafer):
        scan = Scan.objects.create(project=project, sample=sample, instrument=instrument, name=name, origin_x_nm=0,
                                   origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                                   exposure_ms=5, contact_setpoint_nm=20, rows=2, cols=2, status="completed")
        for index, (image, (x, y)) in enumerate(zip(images, nominal, strict=True)):
            rel = f"scans/{scan.pk}/frames/{index:06d}.tif"
            write_image16(absolute(rel), image, pixel_size_nm=simulated.pixel_size_nm)
            Frame.objects.create(scan=scan, index=index, row=index // 2, col=index % 2, commanded_x_nm=x,
                                 commanded_y_nm=y, measured_x_nm=x, measured_y_nm=y, captured_at=timezone.now(),
                                 exposure_ms=5, image=rel, width=image.shape[1], height=image.shape[0])
        return scan

    scan = scan_of("chip corner", simulated.frames, simulated.nominal_xy_nm, sample=chip)
    # bare silicon through the sphere: its shading alone (a bright disc darkening towards the rim)
    yy, xx = np.mgrid[0:512, 0:512]
    shading = np.clip(30000 * (1 - ((xx - 255.5) ** 2 + (yy - 255.5) ** 2) / 300**2), 0, None).astype(np.uint16)
    bare = scan_of("bare silicon", [shading] * 2, [(0, 0)] * 2)
    gone = scan_of("bare silicon, deleted", [shading] * 2, [(0, 0)] * 2)

    log_in(page, live_url)
    # the bare-silicon scan is made the instrument's flat field on its own page...
    page.goto(f"{live_url}/scans/{bare.pk}/")
    expect(page.locator("#calibration-state")).to_have_text(
        "This scan of bare silicon can serve as sim bench's flat field for stitching.")
    expect(page.locator("#mosaic-status")).to_contain_text("Bare silicon is not stitched")
    expect(page.locator("#stitch-form")).to_be_hidden()
    page.get_by_role("button", name="Use this scan as the flat field").click()
    expect(page.locator("#calibration-state")).to_have_text(
        "This scan is sim bench's flat field: its scans are stitched with it.")
    expect(page.get_by_role("button", name="Stop using it")).to_be_visible()
    instrument.refresh_from_db()
    assert instrument.flatfield_calibration_id == bare.pk
    # ...and the chip scan's stitch form offers it first
    page.goto(f"{live_url}/scans/{scan.pk}/")
    flatfield = page.get_by_label("Flat field")
    expect(flatfield).to_be_visible()
    expect(flatfield).to_have_value(f"calibration:{bare.pk}")
    expect(page.get_by_role("button", name="Stitch the mosaic")).to_be_visible()
    # a calibration scan deleted after the page was opened: the reason beside the list, nothing queued
    flatfield.select_option(label="Calibration on bare silicon: bare silicon, deleted (2 frames)")
    gone_pk = gone.pk
    gone.delete()
    page.get_by_role("button", name="Stitch the mosaic").click()
    expect(page.locator("#stitch-flatfield-error")).to_contain_text(f"No scan with id {gone_pk} in your projects")
    assert not Mosaic.objects.exists()
    flatfield.select_option(label="Calibration on bare silicon: bare silicon (2 frames)")
    expect(page.locator("#stitch-flatfield-error")).to_have_count(1)
    page.get_by_role("button", name="Stitch the mosaic").click()
    try:  # the stitch runs on the shared CPUs: give it two minutes
        page.locator("#mosaic-view .openseadragon-canvas").wait_for(state="attached", timeout=120_000)
    except Exception:
        pytest.skip("the stitch did not finish within 2 minutes on this machine")
    expect(page.locator("#stitch-flatfield-error")).to_have_count(0)
    mosaic = Mosaic.objects.get(scan=scan)
    assert mosaic.options == {"flatfield": "calibration", "calibration_scan": bare.pk}
    assert mosaic.report["flatfield"] == "calibration"
    expect(page.locator("#stitch-report")).to_contain_text("Shading corrected with a flat field calibrated on bare silicon.")
    expect(page.get_by_role("button", name="Stitch again")).to_be_visible()
    screenshot(page, "scan-stitched-with-calibration")


def scan_times(scan) -> str:
    """The plan card's last line as the page writes it (in the server's time zone)."""
    from django.utils import timezone

    def at(moment, fmt):
        return timezone.localtime(moment).strftime(fmt)

    scan.refresh_from_db()
    return (f"Created {at(scan.created_at, '%Y-%m-%d %H:%M')}"
            + (f" · started {at(scan.started_at, '%H:%M:%S')}" if scan.started_at else "")
            + (f" · finished {at(scan.finished_at, '%H:%M:%S')}" if scan.finished_at else ""))


def test_a_bare_silicon_scan_offers_itself_as_the_flat_field_as_soon_as_it_has_frames(page, lab):
    url, instrument = lab["url"], lab["instrument"]
    wafer = Sample.objects.create(project=lab["project"], name="wafer", surface="bare_silicon")
    log_in(page, url)
    page.goto(f"{url}/samples/{wafer.pk}/")
    # the plan to begin with: frames side by side, enough for dust on the wafer to drop out of their median
    expect(page.locator("#plan-preview")).to_contain_text("2 × 2 grid: 4 frames")
    # the smallest scan there is: one frame, its area inside the usable square of the field of view
    side = int(0.9 * instrument.fov_diameter_nm / 2**0.5)
    page.get_by_label("Width (nm)").fill(str(side))
    page.get_by_label("Height (nm)").fill(str(side))
    page.get_by_label("Start right away").uncheck()
    page.get_by_role("button", name="Plan scan").click()
    page.wait_for_url(re.compile(r"/scans/\d+/$"))
    scan = Scan.objects.get(sample=wafer)
    assert scan.frames_total == 1
    times = page.get_by_text(re.compile("^Created "))
    expect(page.locator("#scan-status")).to_have_text("planned")
    expect(times).to_have_text(scan_times(scan))
    expect(page.get_by_role("button", name="Use this scan as the flat field")).to_be_hidden()
    expect(page.locator("#calibration-few")).to_be_hidden()

    # an operator's page turns the camera on: its images are counted as the camera counts them, not as frames
    expect(page.locator("#live-info")).to_have_text(re.compile(r"^Camera image \d+ · \d\d:\d\d:\d\d$"), timeout=15_000)

    # everything the page says of the scan's state follows its events, with no reload
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#scan-status")).to_have_text("completed", timeout=60_000)
    # where the live camera was, the scan's own last frame, as a reload shows it
    last = page.locator("#last-frame-caption")
    expect(last).to_have_text(re.compile(
        r"^Frame 1 \(row 1, col 1\), captured \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\. The scan has ended, so the instrument's"))
    expect(page.locator("#live-canvas")).to_have_count(0)
    page.wait_for_function("document.getElementById('last-frame').naturalWidth > 0")
    watched = last.text_content()
    expect(page.get_by_role("button", name="Use this scan as the flat field")).to_be_visible()
    expect(page.locator("#calibration-state")).to_have_text(
        "This scan of bare silicon can serve as sim bench's flat field for stitching.")
    # one frame: as a flat field it keeps the wafer's dust, and the page says so before it is used
    expect(page.locator("#calibration-few")).to_be_visible()
    expect(page.locator("#calibration-few")).to_contain_text("Fewer than 3 frames: dust on the wafer will not drop out")
    expect(times).to_have_text(scan_times(scan))
    assert scan.started_at and scan.finished_at
    expect(page.locator("#mosaic-status")).to_have_text(
        "Bare silicon is not stitched: its frames are a flat field for the instrument's scans (see below).")
    expect(page.locator("#stitch-form")).to_be_hidden()
    frame = scan.frames.get()
    expect(page.locator("#stage")).to_have_text(
        f"x {frame.measured_x_nm / 1000:.3f}  y {frame.measured_y_nm / 1000:.3f}  z {frame.measured_z_nm / 1000:.3f} µm")
    focus = f"{frame.focus_nm / 1e6:.4f} mm"  # to 0.1 µm: autofocus moves the stage by µm
    expect(page.locator("#focus")).to_have_text(focus)
    screenshot(page, "scan-bare-silicon-ended")
    page.reload()
    expect(last).to_have_text(watched)
    expect(page.locator("#focus")).to_have_text(focus)
    page.get_by_role("button", name="Use this scan as the flat field").click()
    expect(page.get_by_role("button", name="Stop using it")).to_be_visible()
    instrument.refresh_from_db()
    assert instrument.flatfield_calibration_id == scan.pk

    # a chip scan watched to its end, its page drawn before it had frames: "Stitch again" offers the instrument's
    # flat field, selected, as a reload does (it offered the estimate alone, selected)
    from imaging.services import plan_scan

    chip = plan_scan(sample=lab["sample"], name="one chip frame", instrument=instrument, plan=dict(
        origin_x_nm=20000, origin_y_nm=20000, size_x_nm=side, size_y_nm=side, overlap=0.4, exposure_ms=5,
        contact_setpoint_nm=20))
    page.goto(f"{url}/scans/{chip.pk}/")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("button", name="Stitch again")).to_be_visible(timeout=90_000)
    flatfield = page.get_by_label("Flat field")
    expect(flatfield).to_have_value(f"calibration:{scan.pk}")
    expect(flatfield.locator("option:checked")).to_have_text(f"Calibration on bare silicon: {scan.name} (1 frame)")
    assert not page.console_errors, page.console_errors


def test_a_scan_aborted_before_its_first_frame_offers_no_stitch_and_no_readouts(page, lab):
    from imaging.services import plan_scan

    url, instrument = lab["url"], lab["instrument"]
    side = 0.9 * instrument.fov_diameter_nm / 2**0.5
    scan = plan_scan(sample=lab["sample"], name="never started", instrument=instrument,
                     plan=dict(origin_x_nm=20000, origin_y_nm=20000, size_x_nm=side, size_y_nm=side, overlap=0.4,
                               exposure_ms=5, contact_setpoint_nm=20))
    log_in(page, url)
    page.goto(f"{url}/scans/{scan.pk}/")
    subtitle, times = page.locator("h1 + p"), page.get_by_text(re.compile("^Created "))
    expect(subtitle).to_have_text("Sample chip · instrument sim bench")  # no reason yet: no separator for it
    expect(page.locator("#stage")).to_contain_text("µm", timeout=10_000)  # the instrument's, while the scan may move

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Abort").click()
    expect(page.locator("#scan-status")).to_have_text("aborted")
    expect(page.locator("#conn-status")).to_have_text("Up to date")  # no longer "Live": the scan moves no more
    expect(subtitle).to_have_text("Sample chip · instrument sim bench · Aborted before it started.")
    expect(page.locator("#mosaic-status")).to_have_text("The scan has no frames, so there is nothing to stitch.")
    expect(page.locator("#stitch-form")).to_be_hidden()
    expect(page.locator("#translate-needs-mosaic")).to_have_text(
        "The scan ended without frames: there is no mosaic to translate.")
    # the instrument's readouts were never this scan's: it has none
    expect(page.locator("#readouts-title")).to_have_text("Readouts at the last frame")
    expect(page.locator("#readouts-none")).to_have_text("None: the scan ended before its first frame.")
    for readout in ("#deflection", "#stage", "#focus"):
        expect(page.locator(readout)).to_have_text("—")
    expect(page.locator("#live-canvas")).to_be_hidden()  # the camera sent no image: no black box
    expect(times).to_have_text(scan_times(scan))
    screenshot(page, "scan-aborted-before-its-first-frame")

    page.reload()  # the same, drawn by the server
    expect(subtitle).to_have_text("Sample chip · instrument sim bench · Aborted before it started.")
    expect(page.locator("#conn-status")).to_have_text("Up to date")
    expect(page.locator("#mosaic-status")).to_have_text("The scan has no frames, so there is nothing to stitch.")
    expect(page.locator("#stitch-form")).to_be_hidden()
    expect(page.locator("#readouts-none")).to_have_text("None: the scan ended before its first frame.")
    expect(page.locator("#translate-needs-mosaic")).to_have_text(
        "The scan ended without frames: there is no mosaic to translate.")
    expect(page.locator("#stage")).to_have_text("—")
    expect(times).to_have_text(scan_times(scan))
    assert not page.console_errors, page.console_errors


def test_an_operator_adds_a_sample_on_the_project_page(page, live_url, django_user_model):
    from ssumweb.models import Project

    project = Project.objects.create(name="Wafer lab")
    user = django_user_model.objects.create_user(username="otto", password="pw-otto")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    Sample.objects.create(project=project, name="die 4")
    log_in(page, live_url)
    page.goto(f"{live_url}/projects/{project.pk}/")
    page.get_by_text("Add a sample").click()
    form = page.locator("#sample-form")
    form.get_by_label("Name").fill("die 4")  # taken: the reason beside the name, nothing created
    form.get_by_role("button", name="Add sample").click()
    expect(form.locator("#sample-name-error")).to_contain_text("already has a sample called 'die 4'")
    screenshot(page, "project-add-sample-error")
    form.get_by_label("Name").fill("wafer offcut")
    form.get_by_label("Surface").select_option(label="Bare silicon (a flat-field reference)")
    form.get_by_label("Description").fill("for the flat field")
    form.get_by_role("button", name="Add sample").click()
    page.wait_for_url(re.compile(r"/samples/\d+/$"))
    sample = Sample.objects.get(project=project, name="wafer offcut")
    assert sample.surface == "bare_silicon" and sample.description == "for the flat field"
    expect(page.get_by_text("bare silicon: a flat-field reference")).to_be_visible()
    assert Sample.objects.filter(project=project).count() == 2
    # Back: the project page is fetched again, not shown from the browser's cache without the new sample
    page.go_back()
    expect(page.locator("main").get_by_role("link", name="wafer offcut")).to_be_visible()
    assert not page.console_errors, page.console_errors
