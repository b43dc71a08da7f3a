"""The instruments' API: a scan of bare silicon made an instrument's flat-field calibration, by operators only."""

import pytest
from django.utils import timezone

from imaging.models import Frame, Sample, SampleSurface, Scan
from instruments.models import Instrument

pytestmark = pytest.mark.django_db


def scan_on(instrument, name, *, frames=1, project=None, surface=SampleSurface.BARE_SILICON):
    project = project or instrument.project
    sample = Sample.objects.create(project=project, name=f"{name} sample", surface=surface)
    scan = Scan.objects.create(project=project, sample=sample, instrument=instrument, name=name, origin_x_nm=0,
                               origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5,
                               contact_setpoint_nm=20, rows=1, cols=1)
    for index in range(frames):
        Frame.objects.create(scan=scan, index=index, row=0, col=index, commanded_x_nm=0, commanded_y_nm=0,
                             measured_x_nm=0, measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5,
                             image=f"f{index}.tif", width=512, height=512)
    return scan


def test_an_operator_makes_a_scan_of_bare_silicon_the_instruments_flat_field(api, project, operator, viewer):
    instrument = Instrument.objects.create(project=project, name="sim")
    bare = scan_on(instrument, "bare silicon")
    url = f"/api/instruments/{instrument.pk}/flatfield-calibration/"
    assert api(viewer).post(url, {"scan": bare.pk}, format="json").status_code == 403
    response = api(operator).post(url, {"scan": bare.pk}, format="json")
    assert response.status_code == 200 and response.json()["flatfield_calibration"] == bare.pk
    assert Instrument.objects.get(pk=instrument.pk).flatfield_calibration == bare
    assert api(viewer).get(f"/api/instruments/{instrument.pk}/").json()["flatfield_calibration"] == bare.pk
    response = api(operator).post(url, {"scan": None}, format="json")
    assert response.status_code == 200 and response.json()["flatfield_calibration"] is None


def test_a_scan_that_cannot_calibrate_the_instrument_is_refused_naming_it(api, project, other_project, operator):
    instrument = Instrument.objects.create(project=project, name="sim")
    other = Instrument.objects.create(project=project, name="other bench")
    cases = [
        (scan_on(other, "elsewhere").pk, "not taken on this instrument"),
        (scan_on(instrument, "not yet", frames=0).pk, "no frames yet"),
        (scan_on(instrument, "chip", surface=SampleSurface.CHIP).pk, "which is not bare silicon"),
        (scan_on(instrument, "theirs", project=other_project).pk, "in your projects"),
        ("x", "valid integer"),
    ]
    for scan, reason in cases:
        response = api(operator).post(f"/api/instruments/{instrument.pk}/flatfield-calibration/", {"scan": scan},
                                      format="json")
        assert response.status_code == 400, response.json()
        error = response.json()["errors"][0]
        assert error["field"] == "scan" and reason in error["message"], error
    assert Instrument.objects.get(pk=instrument.pk).flatfield_calibration is None
