"""The learning half in real Chromium: upload a simulated SEM TIFF, register it by clicking landmarks, cut pairs,
train a tiny model and watch its loss curve, translate the mosaic and compare the layers in synchronised viewers.

The mosaic is made directly (the same chip region the SEM shows, with a pyramid) instead of through a live scan,
so that this stays fast; test_flow.py covers the scan itself."""
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from imaging.imageio import DisplayWindow, write_image16
from imaging.jobs import build_pyramid_for
from imaging.models import Mosaic, Registration, Sample
from imaging.pairs import suggested_tile
from imaging.services import plan_scan
from instruments.sim.chip import Chip
from instruments.sim.dataset import simulate_pair
from instruments.sim.sem import SEMSettings, simulate_sem_image, write_sem_tiff
from mlcore.models import TrainedModel, TrainingRun, Translation
from ssumweb.media import absolute
from ssumweb.models import JobStatus, Membership, Role

from .conftest import SCREENSHOTS, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZE = 256
CENTRE = (100_000, 100_000)
PIXEL_NM = 32.5


@pytest.fixture(scope="module")
def truth():
    return simulate_pair(Chip(seed=4), centre_xy_nm=CENTRE, size_px=SIZE, pixel_size_nm=PIXEL_NM, seed=4)


@pytest.fixture
def bench(live_url, django_user_model, truth):
    """A project with an operator, a sample, a scan and its finished mosaic (with a deep-zoom pyramid)."""
    from ssumweb.models import Project

    project = Project.objects.create(name="Learning lab")
    user = django_user_model.objects.create_user(username="ada", password="pw-ada")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    sample = Sample.objects.create(project=project, name="chip 4", sim_seed=4)
    scan = plan_scan(sample=sample, name="region A", user=user, plan=dict(
        origin_x_nm=0, origin_y_nm=0, size_x_nm=1000, size_y_nm=1000, overlap=0.3, exposure_ms=10,
        contact_setpoint_nm=20))
    mosaic = Mosaic.objects.create(scan=scan, status=JobStatus.SUCCEEDED, width=SIZE, height=SIZE,
                                   pixel_size_nm=PIXEL_NM, image=f"m/{scan.pk}/mosaic.tif")
    write_image16(absolute(mosaic.image.name), truth.lr, pixel_size_nm=PIXEL_NM)
    window = DisplayWindow(float(np.percentile(truth.lr, 0.5)), float(np.percentile(truth.lr, 99.5)))
    mosaic.pyramid = build_pyramid_for(truth.lr, window, f"m/{scan.pk}", pixel_size_nm=PIXEL_NM)
    mosaic.save(update_fields=["pyramid"])
    return {"url": live_url, "project": project, "sample": sample, "scan": scan, "mosaic": mosaic}


def log_in(page, url):
    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("pw-ada")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def click_at(page, selector, fx, fy):
    box = page.locator(selector).bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])


def assert_no_horizontal_scroll(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(100)
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    page.set_viewport_size({"width": 1280, "height": 800})


def test_upload_register_pairs_train_translate(page, bench, tmp_path):
    url = bench["url"]
    log_in(page, url)

    # Upload the SEM of the same chip region (FEI TIFF with a data bar) from the sample page's link.
    sem = simulate_sem_image(Chip(seed=4), centre_xy_nm=CENTRE, shape=(SIZE, SIZE), pixel_size_nm=PIXEL_NM,
                             settings=SEMSettings(), seed=4)
    assert sem.data_bar_rows > 0
    tiff = write_sem_tiff(tmp_path / "chip4.tif", sem)
    page.goto(f"{url}/samples/{bench['sample'].pk}/")
    page.get_by_role("link", name="Upload and pair").click()
    page.wait_for_url(re.compile(r"/sem/upload/"))
    page.get_by_label("SEM image file").set_input_files(str(tiff))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#sem-pixel-size")).to_contain_text("32.50 nm/px (read from the file)")
    expect(page.locator("#sem-data-bar")).to_have_text(f"data bar cropped: {sem.data_bar_rows} rows")
    expect(page.locator("#upload-progress")).to_have_attribute("value", "100")
    expect(page.get_by_role("link", name="Pair with a mosaic")).to_be_visible(timeout=60_000)
    screenshot(page, "sem-upload")
    assert_no_horizontal_scroll(page)

    # Landmarks: the same three places in each viewer (both show the same region at the same size).
    page.get_by_role("link", name="Pair with a mosaic").click()
    # the page shows the image as imported, with a scale bar, before anything is paired
    page.wait_for_function("window.ssumPairViewers?.image?.world.getItemCount() === 1")
    expect(page.locator("#sem-image .scalebar")).to_be_visible()
    expect(page.locator("#sem-image")).to_contain_text("the instrument's data bar cut")
    page.get_by_label("Landmarks (click ≥ 3 matching points)").check()
    page.wait_for_selector("body[data-pair-ready=true]")
    page.wait_for_timeout(600)
    spots = [(0.3, 0.3), (0.7, 0.35), (0.45, 0.72)]
    page.get_by_role("button", name="Register").click()  # too few landmarks: the API's message shows
    expect(page.locator(".field-error, .form-error").first).to_contain_text("3 landmark")

    # Keyboard: Enter in a focused viewer places a point at its crosshair (the centre of the view).
    page.locator("#osd-mosaic .openseadragon-canvas").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".landmark-mosaic")).to_have_count(1)
    expect(page.locator(".form-error")).to_have_text("")  # the stale "3 landmarks" message went with the change
    page.locator("#osd-sem .openseadragon-canvas").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#landmark-help")).to_have_attribute("data-pairs", "1")
    centre = page.evaluate("(() => { const v = window.ssumPairViewers.mosaic.viewport;"
                           " const c = v.viewportToImageCoordinates(v.getCenter(true)); return [c.x, c.y]; })()")
    expect(page.locator("#landmark-rows td").nth(1)).to_have_text(f"({centre[0]:.1f}, {centre[1]:.1f})")
    # Typed: a value off the image is refused beside its field, a good pair is added; then both undone.
    page.get_by_label("Mosaic x (px)").fill("5")
    page.get_by_label("Mosaic y (px)").fill("99999")
    page.get_by_label("SEM x (px)").fill("6")
    page.get_by_label("SEM y (px)").fill("7")
    page.get_by_role("button", name="Add pair").click()
    expect(page.locator("#lm-mosaic-y-error")).to_contain_text("Between 0 and")
    expect(page.get_by_label("Mosaic y (px)")).to_be_focused()
    page.get_by_label("Mosaic y (px)").fill("8")
    page.get_by_label("Mosaic y (px)").press("Enter")  # Enter in a coordinate adds the pair, it does not register
    expect(page.locator("#landmark-help")).to_have_attribute("data-pairs", "2")
    expect(page.locator("#landmark-rows tr").nth(1)).to_contain_text("(5.0, 8.0)")
    for _ in range(4):
        page.get_by_role("button", name="Undo last point").click()
    expect(page.locator("#landmark-help")).to_have_attribute("data-pairs", "0")
    expect(page.locator(".landmark-mosaic")).to_have_count(0)
    for fx, fy in spots:
        click_at(page, "#osd-mosaic", fx, fy)
        click_at(page, "#osd-sem", fx, fy)
    click_at(page, "#osd-mosaic", 0.5, 0.5)
    page.get_by_role("button", name="Undo last point").click()
    expect(page.locator("#landmark-help")).to_have_attribute("data-pairs", "3")
    expect(page.locator(".landmark-mosaic")).to_have_count(3)
    expect(page.locator(".landmark-sem")).to_have_count(3)
    screenshot(page, "sem-pair-landmarks")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r"/registrations/\d+/$"))
    registration = Registration.objects.latest("created_at")
    assert len(registration.landmarks) == 3
    expect(page.locator("#reg-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#reg-residual")).to_have_text(re.compile(r"\d+\.\d\d px"))
    expect(page.locator("#reg-checked")).to_have_text(re.compile(
        r"^3 landmark pairs, largest residual \d+\.\d\d px; refined on the images, \d+\.\d\d px from the clicks"))
    expect(page.locator("#reg-confidence")).to_have_text(re.compile(
        r"^\d+ % \(from how well the two images' edges correlate there and how closely two refinements agree\)$"))
    page.wait_for_selector("body[data-overlay-ready=true]")
    registration.refresh_from_db()
    # The page opened while the job ran: the tile size it offers now comes from the registered overlap.
    expect(page.locator("#tile-help")).to_contain_text("The registered overlap is about")
    expect(page.get_by_label("Tile size (px)")).to_have_value(str(suggested_tile(*registration.overlap_px)))
    # The same spots on the same grid: close to the identity (a click lands within a screen pixel or two).
    assert np.allclose(np.asarray(registration.mosaic_to_sem)[:2, :2], np.eye(2), atol=0.03)
    page.get_by_role("button", name="Accept").click()
    expect(page.locator("#reg-accepted")).to_be_visible()

    # Pairs of small tiles, half held out.
    page.get_by_label("Tile size (px)").fill("64")
    page.get_by_label("Stride (px)").fill("64")
    page.get_by_label("Test fraction").fill("0.5")
    page.get_by_role("button", name="Extract pairs").click()
    expect(page.locator("#pairs-counts")).to_contain_text("train", timeout=60_000)
    assert page.locator("#pair-grid figure.split-train").count() > 0 and page.locator("#pair-grid figure.split-test").count() > 0
    expect(page.get_by_role("link", name="Download the pairs (zip)")).to_have_attribute("href", re.compile(r"/export/$"))
    screenshot(page, "registration")

    # A tiny training run: a bad crop first shows its message beside the field.
    page.get_by_role("link", name="Train a model").click()
    expect(page.locator(f"[name=registration][value='{registration.pk}']")).to_be_checked()
    page.get_by_label("Name").fill("tiny")
    for label, value in [("Steps", "4"), ("Crop (px)", "16"), ("Batch size", "2"), ("Residual blocks", "1"), ("Features", "4")]:
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Start training").click()
    expect(page.locator("#crop_px-error")).to_be_visible()
    screenshot(page, "training-form-error")
    page.get_by_label("Crop (px)").fill("32")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/training/\d+/$"))
    expect(page.locator("#loss-canvas")).to_have_attribute("data-points", re.compile(r"[1-9]"), timeout=90_000)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#loss-canvas")).to_have_attribute("data-points", "4")
    expect(page.locator("#loss-canvas")).to_have_attribute("data-last-step", "4")
    expect(page.locator("#sample-caption")).to_have_text("Epoch 1 of 1")  # one epoch: nothing to choose between
    expect(page.locator("#sample-controls")).to_be_hidden()
    screenshot(page, "training-run")
    run = TrainingRun.objects.get(name="tiny")
    assert [e["step"] for e in run.loss_history] == [1, 2, 3, 4]

    # The model beside its baselines, best values bold.
    page.goto(f"{url}/models/")
    model = TrainedModel.objects.get(training_run=run)
    expect(page.locator(f"#model-{model.pk} table.metrics tbody tr")).to_have_count(4)
    assert page.locator(f"#model-{model.pk} table.metrics strong").count() >= 3
    screenshot(page, "models")
    assert_no_horizontal_scroll(page)

    # Translate the mosaic from the scan page, then open both layers in the synchronised viewer.
    page.goto(f"{url}/scans/{bench['scan'].pk}/")
    page.get_by_label("Model").select_option(str(model.pk))
    page.get_by_role("button", name="Translate", exact=True).click()
    viewer_link = page.get_by_role("link", name="Open the translation in the viewer")
    expect(viewer_link).to_be_visible(timeout=90_000)
    translation = Translation.objects.get(model=model)
    assert translation.status == JobStatus.SUCCEEDED and translation.pyramid
    listed = page.locator(f'#translations [data-translation="{translation.pk}"]')
    expect(listed).to_contain_text(f"Translation {translation.pk} of mosaic {translation.mosaic_id} with {model.name}")
    page.reload()  # the finished translation stays on the page, with its way to the viewer
    expect(listed).to_contain_text("succeeded")
    expect(listed.get_by_role("link", name="open in the viewer")).to_have_attribute(
        "href", f"/viewer/?mosaic={translation.mosaic_id}&translation={translation.pk}")
    screenshot(page, "scan-translations")
    listed.get_by_role("link", name="open in the viewer").click()
    page.wait_for_selector("body[data-viewer-ready=true]")
    assert set(page.evaluate("Object.keys(ssumViewers)")) >= {"mosaic", "translation", "risk"}
    page.wait_for_timeout(1000)  # let the opening "home" animation settle; zooms below are targets (getZoom(false))
    zooms = page.evaluate("[ssumViewers.mosaic.viewport.getZoom(false), ssumViewers.translation.viewport.getZoom(false)]")
    page.locator("#osd-mosaic").hover()
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(800)
    after = page.evaluate("[ssumViewers.mosaic.viewport.getZoom(false), ssumViewers.translation.viewport.getZoom(false)]")
    assert after[0] > zooms[0] * 1.1
    assert after[1] == pytest.approx(after[0] * zooms[1] / zooms[0], rel=0.02)  # same grid: zoom follows
    screenshot(page, "viewer-translation")
    assert not page.console_errors, page.console_errors


def test_every_pair_set_keeps_its_row_and_a_refused_stride_clears_the_last_failure(page, bench, truth):
    """The SEM image registered 150 px right leaves a 106 px strip of overlap: 64 px tiles fit it, 128 px ones
    do not and the job says why in words. The first set keeps its row and zip; a stride the cut cannot take is
    refused beside its field and the failure above goes; training offers each set apart."""
    from imaging.models import PairSet, SEMImage

    hr = truth.hr.astype(np.uint16) * 257
    write_image16(absolute("s/whole.tif"), hr, pixel_size_nm=PIXEL_NM)
    sem = SEMImage.objects.create(project=bench["project"], name="whole", image="s/whole.tif", width=SIZE, height=SIZE,
                                  pixel_size_nm=PIXEL_NM, pixel_size_source="metadata",
                                  pyramid=build_pyramid_for(hr, DisplayWindow(0, 65535), "s/whole", pixel_size_nm=PIXEL_NM))
    registration = Registration.objects.create(mosaic=bench["mosaic"], sem_image=sem, method="landmarks",
                                               status=JobStatus.SUCCEEDED, mosaic_to_sem=[[1.0, 0, -150], [0, 1, 0], [0, 0, 1]])
    log_in(page, bench["url"])
    page.goto(f"{bench['url']}/registrations/{registration.pk}/")
    page.get_by_label("Tile size (px)").fill("64")
    page.get_by_label("Test fraction").fill("0")
    page.get_by_role("button", name="Extract pairs").click()
    expect(page.locator("#pairs-counts")).to_contain_text("train", timeout=60_000)
    first = PairSet.objects.get(registration=registration)
    page.get_by_label("Tile size (px)").fill("128")
    page.get_by_role("button", name="Extract pairs").click()
    expect(page.locator("#pairs-status")).to_have_text(
        "Pair extraction failed: No tile of 128 px fits the registered overlap with enough structure: 2 tiles outside "
        "the registered overlap. Try smaller tiles.", timeout=60_000)
    rows = page.locator("#pair-set-rows tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_have_id(f"pair-set-{first.pk}")
    expect(page.get_by_role("link", name=f"Download pair set {first.pk} (zip)")).to_be_visible()

    page.get_by_label("Tile size (px)").fill("64")
    page.get_by_label("Stride (px)").fill("1000")
    page.get_by_role("button", name="Extract pairs").click()
    expect(page.locator("#stride_px-error")).to_contain_text("at most 256 px")
    expect(page.locator("#pairs-status")).to_have_text("")
    assert PairSet.objects.filter(registration=registration).count() == 2

    page.reload()  # the same rows from the server: newest first, the failure in words, the first set's zip
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("2 tiles outside the registered overlap")
    expect(rows.nth(1)).to_contain_text(re.compile(r"\b\d+ pairs?: \d+ train, 0 test"))
    expect(page.get_by_role("link", name=f"Download pair set {first.pk} (zip)")).to_be_visible()
    expect(page.locator("#pairs-counts")).to_contain_text(f"Pair set {first.pk}, 64 px tiles")
    screenshot(page, "registration-pair-sets")
    assert_no_horizontal_scroll(page)

    page.get_by_role("link", name="Train a model").click()
    expect(page.locator(f"[name=registration][value='{registration.pk}']")).to_be_checked()
    expect(page.get_by_label(f"Pair set of registration {registration.pk}")).to_have_value(str(first.pk))
    screenshot(page, "training-pair-sets")
    assert not page.console_errors, page.console_errors


@pytest.fixture
def translated(bench, truth):
    """A finished translation of the bench's mosaic (its pyramid made from the simulated SEM of the same region)."""
    mosaic = bench["mosaic"]
    model = TrainedModel.objects.create(project=bench["project"], name="fixture model", weights="w/model.pt",
                                        pixel_size_nm=PIXEL_NM)
    hr16 = truth.hr.astype(np.uint16) * 257
    translation = Translation.objects.create(mosaic=mosaic, model=model, status=JobStatus.SUCCEEDED,
                                             pyramid=build_pyramid_for(hr16, DisplayWindow(0, 65535), f"t/{mosaic.pk}",
                                                                       pixel_size_nm=PIXEL_NM))
    return translation


def test_automatic_registration_searches_only_the_part_of_the_mosaic_in_view(page, bench, truth):
    """The SEM image shows mosaic px (30…210, 40…200). Ticking "search only the part in view" and
    zooming the mosaic around it sends that part as the search box; the registration finds the
    SEM image there and its page says what checked it."""
    from imaging.models import SEMImage

    part = (truth.hr[40:200, 30:210].astype(np.uint16) * 257)
    write_image16(absolute("s/part.tif"), part, pixel_size_nm=PIXEL_NM)
    window = DisplayWindow(float(part.min()), float(part.max()))
    sem = SEMImage.objects.create(project=bench["project"], name="part", image="s/part.tif", width=180, height=160,
                                  pixel_size_nm=PIXEL_NM, pixel_size_source="metadata",
                                  pyramid=build_pyramid_for(part, window, "s/part", pixel_size_nm=PIXEL_NM))
    log_in(page, bench["url"])
    page.goto(f"{bench['url']}/sem/{sem.pk}/")
    expect(page.locator("#search-help")).to_contain_text("covers about 44 % of this mosaic's area")
    expect(page.locator("#osd-search")).to_be_hidden()  # a large share: the whole mosaic is searched by default
    page.get_by_label("Search only the part of the mosaic in view").check()
    expect(page.locator("#osd-search")).to_be_visible()
    page.wait_for_function("window.ssumPairViewers.search && window.ssumPairViewers.search.world.getItemCount() === 1")
    page.evaluate("""(() => { const v = window.ssumPairViewers.search;
        v.viewport.fitBounds(v.viewport.imageToViewportRectangle(10, 20, 240, 200), true); })()""")
    screenshot(page, "sem-pair-search")
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r"/registrations/\d+/$"))
    registration = Registration.objects.latest("created_at")
    x0, y0, x1, y1 = registration.search_box
    # fitBounds keeps the viewer's aspect ratio: the view holds the box asked for, clipped to the mosaic
    assert x0 <= 10 and y0 <= 20 and x1 >= 250 and y1 >= 220 and (x1 - x0) * (y1 - y0) < SIZE * SIZE, registration.search_box
    expect(page.get_by_text(f"searched in mosaic px {x0}–{x1} × {y0}–{y1}")).to_be_visible()
    expect(page.locator("#reg-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#reg-checked")).to_have_text(re.compile(
        r"^Verified in gradients against the whole mosaic; \d+ SEM windows re-located nearby put it within \d\.\d\d px"))
    registration.refresh_from_db()
    corner = np.linalg.inv(np.asarray(registration.mosaic_to_sem)) @ np.array([0.0, 0.0, 1.0])
    assert np.allclose(corner[:2] / corner[2], (30, 40), atol=1.0)

    # an SEM image 60 px across at the mosaic's pixel size: the page says to use landmarks
    tiny = SEMImage.objects.create(project=bench["project"], name="tiny", image="s/part.tif", width=120, height=120,
                                   pixel_size_nm=PIXEL_NM / 2, pixel_size_source="metadata", pyramid=sem.pyramid)
    page.goto(f"{bench['url']}/sem/{tiny.pk}/")
    expect(page.locator("#search-help")).to_have_text(re.compile(r"^The SEM image is only 60 px across .* Use landmarks\.$"))
    # registered automatically all the same, it fails, and its page offers to try again on the same mosaic
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r"/registrations/\d+/$"))
    expect(page.locator("#reg-status")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#reg-failure")).to_contain_text("use landmarks")
    screenshot(page, "registration-failed")
    page.get_by_role("link", name="Try again").click()
    page.wait_for_url(re.compile(rf"/sem/{tiny.pk}/\?mosaic={registration.mosaic_id}$"))


def test_viewer_zoom_syncs_and_url_restores_the_view(page, bench, translated):
    """Two layers on one mosaic grid: zooming the second zooms the first, and the URL brings the view back."""
    url, mosaic = bench["url"], bench["mosaic"]
    log_in(page, url)
    page.goto(f"{url}/viewer/?mosaic={mosaic.pk}&translation={translated.pk}")
    page.wait_for_selector("body[data-viewer-ready=true]")
    zoom = "[ssumViewers.mosaic.viewport.getZoom(false), ssumViewers.translation.viewport.getZoom(false)]"
    page.wait_for_timeout(1000)  # let the opening "home" animation settle; zooms are targets (getZoom(false))
    before = page.evaluate(zoom)
    page.wait_for_function("location.search.includes('z=')")
    initial_z = page.evaluate("new URLSearchParams(location.search).get('z')")
    page.locator("#osd-translation").hover()
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(800)
    after = page.evaluate(zoom)
    assert after[1] > before[1] * 1.1, (before, after)
    assert after[0] == pytest.approx(after[1] * before[0] / before[1], rel=0.02), (before, after)
    page.wait_for_function(f"new URLSearchParams(location.search).get('z') !== '{initial_z}'")
    page.wait_for_timeout(400)  # the state is saved 150 ms after the animation ends
    shared = page.url
    centre = page.evaluate("(() => { const v = ssumViewers.mosaic; const c = v.world.getItemAt(0).viewportToImageCoordinates(v.viewport.getCenter(true)); return [c.x, c.y]; })()")

    other = page.context.new_page()
    other.goto(shared)
    other.wait_for_selector("body[data-viewer-ready=true]")
    other.wait_for_timeout(300)
    restored = other.evaluate("(() => { const v = ssumViewers.mosaic; const c = v.world.getItemAt(0).viewportToImageCoordinates(v.viewport.getCenter(true)); return [c.x, c.y, v.viewport.getZoom(false)]; })()")
    assert restored[0] == pytest.approx(centre[0], abs=2) and restored[1] == pytest.approx(centre[1], abs=2)
    assert restored[2] == pytest.approx(after[0], rel=0.02), (shared, other.url, page.evaluate(
        "[innerWidth, document.querySelector('#osd-mosaic').clientWidth]"), other.evaluate(
        "[innerWidth, document.querySelector('#osd-mosaic').clientWidth]"))

    # Where the pointer is, in µm on the mosaic (image px × its pixel size), read the same over either layer
    for key, (fx, fy) in (("mosaic", (0.3, 0.4)), ("translation", (0.6, 0.7))):
        box = page.locator(f"#osd-{key}").bounding_box()
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        x, y = page.evaluate("""([key, x, y]) => { const v = ssumViewers[key];
            const p = v.world.getItemAt(0).viewerElementToImageCoordinates(new OpenSeadragon.Point(x, y));
            return [p.x, p.y]; }""", [key, fx * box["width"], fy * box["height"]])
        expect(page.locator(".cursor-pos")).to_have_count(2)  # one over each layer
        for readout in page.locator(".cursor-pos").all():
            shown = re.fullmatch(r"x (\d+\.\d\d) µm · y (\d+\.\d\d) µm", readout.text_content())
            assert shown, readout.text_content()
            assert float(shown[1]) == pytest.approx(x * PIXEL_NM / 1000, abs=0.006), (key, shown[0], x)
            assert float(shown[2]) == pytest.approx(y * PIXEL_NM / 1000, abs=0.006), (key, shown[0], y)

    # The image is the first thing in view (it began at y ≈ 512 on a desktop and below the whole first screen of a
    # phone, under the controls): beside its controls on a desktop, above them on a phone, none of them lost.
    for width, height in ((1440, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(200)
        image, tools = page.locator("#osd-mosaic").bounding_box(), page.locator(".viewer-tools").bounding_box()
        assert image["y"] < 250 and image["y"] + image["height"] <= height, (width, image)
        if width > 900:
            assert tools["x"] >= image["x"] + image["width"] and tools["y"] < 250, (image, tools)
        else:
            assert tools["y"] >= page.locator("#viewers").bounding_box()["y"], (image, tools)
        for name in ("Line profile", "Copy link"):
            expect(page.get_by_role("button", name=name)).to_be_visible()
        for label in ("Black level", "White level", "Link to this view"):
            expect(page.get_by_label(label)).to_be_visible()
        box = page.locator("#osd-mosaic").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.screenshot(path=str(SCREENSHOTS / f"viewer-layout-{width}.png"))
    page.set_viewport_size({"width": 1280, "height": 800})
    assert not page.console_errors, page.console_errors


# The first viewer's line overlay, read back: is the pixel at element (x, y) drawn (the line is yellow)?
LINE_AT = """([x, y]) => { const c = document.querySelector('#osd-mosaic .line-overlay');
    return c.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data[3] > 0; }"""
# Where an image point (mosaic px) of the first viewer is on screen, in its element's px.
ON_SCREEN = """([x, y]) => { const v = ssumViewers.mosaic;
    const p = v.world.getItemAt(0).imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y)); return [p.x, p.y]; }"""
TO_IMAGE = """([x, y]) => { const v = ssumViewers.mosaic;
    const p = v.world.getItemAt(0).viewerElementToImageCoordinates(new OpenSeadragon.Point(x, y)); return [p.x, p.y]; }"""


def test_a_line_measured_with_a_finger_stays_on_the_image_as_the_view_moves(browser, bench):
    """On a touch screen a finger draws the whole line (the browser took the drag for a scroll: a stub, no length),
    and the line stays on the features it measured when the view is panned or zoomed (it stayed put on the screen,
    over other features, with the old length beside it)."""
    url, mosaic = bench["url"], bench["mosaic"]
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = context.new_page()
    log_in(page, url)
    page.goto(f"{url}/viewer/?mosaic={mosaic.pk}")
    page.wait_for_selector("body[data-viewer-ready=true]")
    page.wait_for_timeout(800)  # the opening "home" animation
    # the top menu is one line that scrolls sideways (it took four lines, ~110 px), every link and Log out kept
    header = page.locator("header.topbar").bounding_box()
    assert header["height"] <= 56, header
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_count(7)
    assert page.evaluate("(n) => n.scrollWidth > n.clientWidth && n.getBoundingClientRect().right <= 390",
                         nav.element_handle())
    page.screenshot(path=str(SCREENSHOTS / "topbar-phone.png"), clip={"x": 0, "y": 0, "width": 390, "height": 120})
    nav.get_by_role("link", name="Viewer").scroll_into_view_if_needed()
    expect(nav.get_by_role("link", name="Viewer")).to_be_in_viewport()
    expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
    page.get_by_role("button", name="Line profile").click()
    box = page.locator("#osd-mosaic").bounding_box()
    page.evaluate("(y) => window.scrollTo(0, y)", box["y"] - 100)  # the viewer in view, the page able to scroll
    box = page.locator("#osd-mosaic").bounding_box()
    a, b = (0.25 * box["width"], 0.3 * box["height"]), (0.75 * box["width"], 0.7 * box["height"])
    cdp = context.new_cdp_session(page)
    touch = lambda kind, x, y: cdp.send("Input.dispatchTouchEvent", {  # noqa: E731
        "type": kind, "touchPoints": [] if kind == "touchEnd" else [{"x": box["x"] + x, "y": box["y"] + y}]})
    touch("touchStart", *a)
    for t in [k / 10 for k in range(1, 11)]:
        touch("touchMove", a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
        page.wait_for_timeout(16)
    touch("touchEnd", *b)
    expect(page.locator("#line-length")).to_have_text(re.compile(r"^Length \d"))
    # the profile's y axis says what its values are: the tiles' grey as the camera counts the pyramid's window gives
    # (it was an unlabelled 0–255 of screen grey)
    from imaging.pyramid import read_dzi

    window = read_dzi(absolute(mosaic.pyramid)).window
    expect(page.locator("#profile-note")).to_contain_text(
        f"Grey level along the line as ≈ camera counts: the tiles map {window.low:.0f}–{window.high:.0f} to 0–255")
    expect(page.locator("#profile")).to_have_attribute("aria-label", re.compile("y axis: ≈ camera counts$"))
    page.locator("#profile").screenshot(path=str(SCREENSHOTS / "viewer-profile-phone.png"))
    middle = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    assert page.evaluate(LINE_AT, middle)
    image_a, image_b = page.evaluate(TO_IMAGE, a), page.evaluate(TO_IMAGE, b)
    length = page.locator("#line-length").text_content()

    # the view moves (panned and zoomed): the line goes with the image
    page.get_by_role("button", name="Line profile").click()
    page.evaluate("""(() => { const v = ssumViewers.mosaic.viewport;
        v.zoomBy(1.5, null, true); v.panBy(v.deltaPointsFromPixels(new OpenSeadragon.Point(60, 40)), true); })()""")
    page.wait_for_timeout(100)
    new_a, new_b = page.evaluate(ON_SCREEN, image_a), page.evaluate(ON_SCREEN, image_b)
    assert abs(new_a[0] - a[0]) > 20 or abs(new_a[1] - a[1]) > 20, (a, new_a)
    assert page.evaluate(LINE_AT, ((new_a[0] + new_b[0]) / 2, (new_a[1] + new_b[1]) / 2))
    assert not page.evaluate(LINE_AT, middle)
    expect(page.locator("#line-length")).to_have_text(length)  # the same features, the same length
    context.close()


def test_an_operator_cancels_a_stitch_from_the_scan_page(page, bench):
    """A re-stitch queued or running had no Cancel button on the scan page, though the API cancels it."""
    from imaging.models import Scan

    Scan.objects.filter(pk=bench["scan"].pk).update(status="completed")
    again = Mosaic.objects.create(scan=bench["scan"], status=JobStatus.QUEUED, message="Stitch queued.")
    log_in(page, bench["url"])
    page.goto(f"{bench['url']}/scans/{bench['scan'].pk}/")
    expect(page.locator("#mosaic-status")).to_contain_text("Stitching…")
    screenshot(page, "scan-stitch-cancel")
    page.get_by_role("button", name="Cancel the stitch").click()
    expect(page.get_by_role("button", name="Cancel the stitch")).to_be_hidden()
    again.refresh_from_db()
    assert again.status == JobStatus.CANCELLED, again.status
    expect(page.locator("#stitch-cancel-error")).to_be_empty()
    assert not page.console_errors, page.console_errors
