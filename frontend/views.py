"""Server-rendered pages: each reads through the same project scoping as the API."""
import math

from django.core.paginator import Paginator
from django.db.models import Count, Max, Min, OuterRef, Q, Subquery
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone

from imaging.models import Mosaic, Sample, SampleSurface, Scan, ScanStatus, SEMImage
from imaging.selectors import flatfield_choices
from imaging.services import SCAN_TRANSITIONS, USER_ACTIONS, limits_for
from instruments.models import Instrument
from instruments.scan_plan import area_for_grid
from mlcore.models import TrainedModel, TrainingRun, Translation
from ssumweb import events
from ssumweb.access import for_user, role_in, visible_projects
from ssumweb.api import project_id_of
from ssumweb.models import ROLE_RANK, Event, JobStatus, Role

SAMPLES_ON_PROJECT = 12  # the rest are one link away, in the sample list filtered to the project


#: The largest id a database holds (a signed 64-bit key): a longer number in a query finds nothing.
MAX_ID = 2**63 - 1


def id_param(value: str | None) -> int | None:
    """An object id from a query parameter, or None for anything else: ASCII digits only (``"²".isdigit()``
    is true, and int() refuses it) and no larger than a database key."""
    if not value or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= MAX_ID else None


def _scoped(model, user):
    return for_user(model.objects.all(), user, model.PROJECT_PATH)


def _get(model, user, pk):
    obj = _scoped(model, user).filter(pk=pk).first()
    if obj is None:
        raise Http404(f"No such {model._meta.verbose_name}.")
    return obj


def _page(request, queryset, per_page=24):
    # Aggregating querysets drop Meta.ordering: order explicitly so pages are stable.
    return Paginator(queryset.order_by("-created_at", "-pk"), per_page).get_page(request.GET.get("page"))


def _can_operate(user, obj) -> bool:
    return _can_operate_project(user, project_id_of(obj))


def _can_operate_project(user, project_id) -> bool:
    role = role_in(user, project_id)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.OPERATOR]


def _filtered_scans(request, scans):
    """Scans narrowed by the ?q= (scan or sample name) and ?status= filters of a list page."""
    query = request.GET.get("q", "").strip()
    if query:
        scans = scans.filter(Q(name__icontains=query) | Q(sample__name__icontains=query))
    status = request.GET.get("status", "")
    if status in ScanStatus.values:
        scans = scans.filter(status=status)
    return scans, query, status


#: What a scan card shows: frames taken, and the picture — the latest stitched mosaic with a pyramid, else frame 1.
_CARD_FIELDS = {
    "frames_done": Count("frames"),
    "first_frame_id": Min("frames__id"),
    "mosaic_id": Subquery(Mosaic.objects.filter(scan=OuterRef("pk"), status=JobStatus.SUCCEEDED)
                          .exclude(pyramid="").order_by("-created_at", "-pk").values("pk")[:1]),
}


def dashboard(request):
    user = request.user
    scans = _scoped(Scan, user).select_related("sample").annotate(**_CARD_FIELDS).order_by("-created_at")
    active = [JobStatus.QUEUED, JobStatus.RUNNING]
    projects = visible_projects(user).annotate(sample_count=Count("samples", distinct=True),
                                               scan_count=Count("scans", distinct=True))
    project_query = request.GET.get("q", "").strip()
    if project_query:
        projects = projects.filter(Q(name__icontains=project_query) | Q(description__icontains=project_query))
    context = {
        "projects": _page(request, projects, per_page=12), "q": project_query,
        "recent_scans": scans[:8],
        "running_scans": scans.filter(status__in=[ScanStatus.RUNNING, ScanStatus.PAUSED]),
        "instruments": _scoped(Instrument, user).select_related("flatfield_calibration"),
        "running_training": _scoped(TrainingRun, user).filter(status__in=active),
        "running_translations": _scoped(Translation, user).filter(status__in=active).select_related("mosaic", "model"),
    }
    return render(request, "frontend/dashboard.html", context)


def project_detail(request, pk):
    project = visible_projects(request.user).filter(pk=pk).first()
    if project is None:
        raise Http404("No such project.")
    scans = project.scans.select_related("sample").annotate(**_CARD_FIELDS)
    scans, query, status = _filtered_scans(request, scans)
    return render(request, "frontend/project.html", {
        "project": project,
        "role": role_in(request.user, project.pk),
        "members": project.memberships.select_related("user"),
        "samples": project.samples.annotate(scan_count=Count("scans")).order_by("-created_at")[:SAMPLES_ON_PROJECT],
        "sample_total": project.samples.count(), "samples_shown": SAMPLES_ON_PROJECT,
        "page": _page(request, scans, per_page=12), "q": query, "status": status, "statuses": ScanStatus.choices,
        "scan_total": project.scans.count(),
        "instruments": project.instruments.all(),
        # The demo project is the one created for the embedded default, with simulated instruments.
        "is_demo": project.is_demo or "demo" in project.name.lower() and project.instruments.filter(piezo_address="sim").exists(),
        "can_operate": _can_operate_project(request.user, project.pk),
        "surfaces": SampleSurface.choices,
        # the latest demo, followed again on a reload: its steps while it runs, its links once it ended
        "last_demo": project.demo_runs.order_by("-created_at", "-pk").first(),
    })


def sample_list(request):
    samples = _scoped(Sample, request.user).select_related("project").annotate(scan_count=Count("scans"))
    query = request.GET.get("q", "").strip()
    if query:
        samples = samples.filter(Q(name__icontains=query) | Q(description__icontains=query))
    project = request.GET.get("project", "")
    if (project_id := id_param(project)) is not None:
        samples = samples.filter(project_id=project_id)
    return render(request, "frontend/sample_list.html", {
        "page": _page(request, samples), "q": query, "project": project, "projects": visible_projects(request.user)})


#: The sample page's plan to begin with, as (frames across, overlap): a 3 × 3 mosaic of a chip (one frame has no
#: overlaps to stitch by); on bare silicon 2 × 2 frames side by side, since a flat field's per-pixel median drops
#: dust out only of 3 or more frames, apart (docs/instruments.md, "The flat field").
DEFAULT_GRID = {SampleSurface.CHIP: (3, 0.4), SampleSurface.BARE_SILICON: (2, 0.0)}
PLAN_ORIGIN_NM = 20_000


def default_plan(sample, instrument) -> dict:
    """The plan form's first values for ``sample`` on ``instrument`` (its field of view and travel; None: the
    defaults'): the area of :data:`DEFAULT_GRID`'s grid, at 20 µm from the stage's corner where it fits, else centred."""
    frames_across, overlap = DEFAULT_GRID.get(sample.surface, DEFAULT_GRID[SampleSurface.CHIP])
    limits = limits_for(instrument)
    size = area_for_grid(frames_across, fov_diameter_nm=limits.fov_diameter_nm, overlap=overlap)
    origin = [PLAN_ORIGIN_NM if PLAN_ORIGIN_NM + size <= travel else max(0.0, (travel - size) / 2)
              for travel in (limits.travel_x_nm, limits.travel_y_nm)]
    return {"origin_x_nm": round(origin[0]), "origin_y_nm": round(origin[1]), "size_nm": round(size), "overlap": overlap}


def sample_detail(request, pk):
    sample = _get(Sample, request.user, pk)
    scans = sample.scans.annotate(**_CARD_FIELDS)
    instruments = sample.project.instruments.all()
    return render(request, "frontend/sample_detail.html", {
        "sample": sample, "scans": scans, "sem_images": sample.sem_images.all(),
        "instruments": instruments, "models": TrainedModel.objects.filter(project=sample.project),
        "plan": default_plan(sample, instruments.first()),  # the form's instrument comes first
        "reference": sample.surface == SampleSurface.BARE_SILICON,
        "can_operate": _can_operate(request.user, sample)})


def scan_list(request):
    scans = _scoped(Scan, request.user).select_related("sample").annotate(**_CARD_FIELDS)
    scans, query, status = _filtered_scans(request, scans)
    return render(request, "frontend/scan_list.html", {
        "page": _page(request, scans), "q": query, "status": status, "statuses": ScanStatus.choices})


def scan_detail(request, pk):
    """The scan and its live monitor: the page renders what exists, the script follows events after `after_seq`."""
    scan = _get(Scan, request.user, pk)
    # Read the seq first: an event published between the two reads is then replayed, never lost.
    after_seq = Event.objects.filter(topic=events.topic_for("scan", scan.pk)).aggregate(m=Max("seq"))["m"] or 0
    frames = list(scan.frames.order_by("index"))
    last_frame = frames[-1] if frames else None
    can_operate = _can_operate(request.user, scan)
    # A completed or aborted scan never moves again: the instrument's live view and readouts belong to
    # whatever it does now, so the page shows the scan's own last readouts instead.
    ended = not SCAN_TRANSITIONS[scan.status]
    reference = scan.sample.surface == SampleSurface.BARE_SILICON  # a flat field, not a mosaic
    online = bool(scan.instrument and scan.instrument.online)
    from .learning_views import translate_context

    # a stitch of the ended scan (the final one, or one asked for again) that an operator may call off
    stitching = (scan.mosaics.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).order_by("-created_at").first()
                 if can_operate and scan.status in STITCHABLE else None)
    return render(request, "frontend/scan_detail.html", {
        "scan": scan, "frames": frames, "frames_done": len(frames), "mosaics": scan.mosaics.all(),
        "other_mosaics": _other_mosaics(scan),
        "last_frame": last_frame, "ended": ended, "instrument_online": online,
        "reference": reference, "few_calibration_frames": _few_calibration_frames(scan, len(frames)),
        "can_operate": can_operate, "flatfield_choices": flatfield_choices(scan), "stitching": stitching,
        **translate_context(scan, request.user),
        "monitor_config": {"scan_id": scan.pk, "instrument_id": scan.instrument_id, "status": scan.status,
                           "frames_done": len(frames), "frames_total": scan.frames_total, "after_seq": after_seq,
                           "can_operate": can_operate, "translate_with": scan.translate_with_id,
                           "ended": ended, "instrument_online": online, "last_readout": _readout(last_frame),
                           "reference": reference, "time_zone": timezone.get_current_timezone_name(),
                           "z_planes": scan.z_planes, "overlap": scan.overlap,
                           # the live camera's and live mosaic's scale bars: the instrument's sample-side pixel size
                           # (the mosaic keeps it) and the camera frame's width in those pixels
                           "pixel_size_nm": scan.instrument.pixel_size_nm if scan.instrument else None,
                           "camera_width_px": _camera_width_px(scan.instrument),
                           "calibration_frames_advised": CALIBRATION_FRAMES_ADVISED,
                           "actions": {action: sorted(states) for action, states in USER_ACTIONS.items()},
                           "ending_states": sorted(status for status, onward in SCAN_TRANSITIONS.items()
                                                   if not onward)}})


def _other_mosaics(scan) -> list[dict]:
    """The scan's finished stitches other than the one the page shows (its newest with a pyramid, as the
    monitor picks it), newest first, each with what its report says in a line: a lab member comparing flat
    fields, or looking for a stitch that failed, needs them."""
    shown = scan.mosaics.exclude(pyramid="").order_by("-created_at", "-pk").values_list("pk", flat=True).first()
    # a live mosaic is stitched in the end like any other (and stays "running" while it grows)
    stitched = (scan.mosaics.exclude(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
                .exclude(pk=shown).order_by("-created_at", "-pk"))
    out = []
    for mosaic in stitched:
        report = mosaic.report or {}
        if mosaic.status != JobStatus.SUCCEEDED:
            summary = mosaic.failure_reason or mosaic.get_status_display()
        elif "mean_residual_px" in report:
            summary = (f"frames agree to {report['mean_residual_px']:.2f} px on average "
                       f"({report.get('max_residual_px', 0):.2f} px at worst)")
            if report.get("uncertain_frames"):
                summary += f"; {len(report['uncertain_frames'])} placed with low confidence"
        else:
            summary = ""
        out.append({"mosaic": mosaic, "summary": summary})
    return out


def frame_detail(request, pk, index):
    """One frame of a scan, as a lab member checks it: the picture with a scale bar, where and how it was
    taken, how the last stitch placed it, its neighbours and its 16-bit TIFF. ``index`` counts from 0."""
    scan = _get(Scan, request.user, pk)
    frames = scan.frames.order_by("index")
    frame = frames.filter(index=index).first()
    if frame is None:
        raise Http404("No such frame in this scan.")
    pixel_size_nm = scan.instrument.pixel_size_nm if scan.instrument else None
    return render(request, "frontend/frame_detail.html", {
        "scan": scan, "frame": frame, "number": frame.index + 1, "pixel_size_nm": pixel_size_nm,
        "previous": frames.filter(index__lt=index).last(), "next": frames.filter(index__gt=index).first(),
        "scale_bar": _scale_bar(frame.width * pixel_size_nm) if pixel_size_nm else None,
        "stitched": _stitched_as(scan, frame.index), "details": _frame_details(frame, pixel_size_nm)})


def _frame_details(frame, pixel_size_nm) -> list[tuple[str, str]]:
    """What the instrument did and read for ``frame``, in the units its controllers show."""
    um = lambda nm: f"{nm / 1000:.3f}"  # noqa: E731
    rows = [("Grid place", f"row {frame.row + 1}, column {frame.col + 1}"),
            ("Stage, commanded", f"x {um(frame.commanded_x_nm)} y {um(frame.commanded_y_nm)} µm"),
            ("Stage, measured", f"x {um(frame.measured_x_nm)} y {um(frame.measured_y_nm)}"
                                + (f" z {um(frame.measured_z_nm)}" if frame.measured_z_nm is not None else "") + " µm")]
    if frame.focus_nm is not None:
        rows.append(("Focus stage", f"{frame.focus_nm / 1e6:.4f} mm"))
    if frame.deflection_nm is not None:
        rows.append(("Contact force (deflection)", f"{frame.deflection_nm:.1f} nm"))
    if frame.focus_score is not None:
        rows.append(("Focus score", f"{frame.focus_score:.3g}"))
    size = f"{frame.width} × {frame.height} px"
    if pixel_size_nm:
        size += f" at {pixel_size_nm:g} nm/px ({um(frame.width * pixel_size_nm)} × {um(frame.height * pixel_size_nm)} µm)"
    rows += [("Image", size), ("Exposure", f"{frame.exposure_ms:g} ms"),
             ("Captured", timezone.localtime(frame.captured_at).strftime("%Y-%m-%d %H:%M:%S"))]
    return rows


def _scale_bar(field_nm: float) -> dict:
    """A round length (1, 2 or 5 × 10^k nm) of at most a fifth of the field, as its label and its share
    of the picture's width (%), so the bar stays right however wide the browser draws the picture."""
    exponent = 10 ** math.floor(math.log10(field_nm / 5))
    length = next(m * exponent for m in (5, 2, 1) if m * exponent <= field_nm / 5)
    label = f"{length / 1000:g} µm" if length >= 1000 else f"{length:g} nm"
    return {"label": label, "percent": 100 * length / field_nm}


def _stitched_as(scan, index: int) -> str:
    """How the scan's latest final stitch placed frame ``index``, in words; "" before any."""
    mosaic = scan.mosaics.filter(status=JobStatus.SUCCEEDED).exclude(report={}).order_by("-created_at", "-pk").first()
    report = mosaic.report if mosaic else {}
    order = report.get("frame_index") or list(range(len(report.get("positions_px") or ())))
    if index not in order:
        return ""
    position = order.index(index)
    if position in (report.get("placed_by_stage") or ()):
        return f"Placed by the stage alone in mosaic {mosaic.pk}: none of its overlaps matched, so its seams may be several pixels off."
    if position in (report.get("uncertain_frames") or ()):
        return f"Placed with low confidence in mosaic {mosaic.pk}: its overlaps do not agree on one offset."
    return f"Placed surely in mosaic {mosaic.pk}."


#: A scan in these states moves no more: its mosaic is stitched (again) and the stitch can be cancelled (the monitor's
#: TERMINAL); while it runs, its live mosaic grows with it.
STITCHABLE = (ScanStatus.COMPLETED, ScanStatus.FAILED, ScanStatus.ABORTED)

#: A flat field of bare silicon drops dust out with this many frames or more (their per-pixel median; fewer are
#: averaged, dust and all: imaging.flatfield.flatfield_from_calibration).
CALIBRATION_FRAMES_ADVISED = 3


def _few_calibration_frames(scan, frames_done: int) -> bool:
    """Whether to warn that ``scan``, as a flat field, keeps the wafer's dust: it has fewer frames than advised,
    and will not get more (its plan has fewer, or it no longer runs)."""
    return frames_done < CALIBRATION_FRAMES_ADVISED and (
        scan.frames_total < CALIBRATION_FRAMES_ADVISED or scan.status not in (ScanStatus.PLANNED, ScanStatus.RUNNING))


def _camera_width_px(instrument) -> int | None:
    """How many sample pixels across the camera's frame (its region of interest) is, as the worker reads it."""
    if instrument is None:
        return None
    from instruments.worker import camera_roi

    x0, _, x1, _ = camera_roi(instrument)
    return x1 - x0


def _readout(frame) -> dict | None:
    """What the instrument read when it captured ``frame``, as the live readouts name it."""
    if frame is None:
        return None
    return {"x_nm": frame.measured_x_nm, "y_nm": frame.measured_y_nm, "z_nm": frame.measured_z_nm,
            "focus_nm": frame.focus_nm, "deflection_nm": frame.deflection_nm}


def sem_list(request):
    sems = _scoped(SEMImage, request.user).select_related("project", "sample").annotate(
        registration_count=Count("registrations", distinct=True))
    query = request.GET.get("q", "").strip()
    if query:
        sems = sems.filter(Q(name__icontains=query) | Q(original_name__icontains=query))
    project = request.GET.get("project", "")
    if (project_id := id_param(project)) is not None:
        sems = sems.filter(project_id=project_id)
    return render(request, "frontend/sem_list.html", {"page": _page(request, sems), "q": query, "project": project,
                                                      "projects": visible_projects(request.user)})
