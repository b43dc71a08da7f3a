"""Pages for the learning half: SEM upload and pairing, registration results and pairs, training runs, models.

Each page renders what exists through the same project scoping as the API; the scripts then call the API (which
checks permissions again) and follow the job's events."""
from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models import Prefetch, Q
from django.shortcuts import render
from django.urls import reverse

from imaging.models import Mosaic, PairSet, Registration, Sample, SEMImage
from imaging.sem_import import FORMATS, FORMATS_IN_WORDS
from mlcore.models import TrainedModel, TrainingRun
from ssumweb.access import visible_projects
from ssumweb.api import project_id_of
from ssumweb.models import JobStatus

from .views import _can_operate, _can_operate_project, _get, _scoped, id_param

# The metrics the models table shows, in order: key in metrics[...] → (heading, higher is better).
# CX is mlcore.metrics.contextual_score, a similarity in (0, 1]: higher is better (a flat grey output scores ~0).
METRICS = [("psnr", "PSNR (dB)", True), ("ssim", "SSIM", True), ("cx", "CX", True)]
BASELINES = [("model", "Model"), ("input", "Input (SSUM)"), ("unsharp", "Unsharp mask"),
             ("richardson_lucy", "Richardson–Lucy")]


def _operable_projects(user):
    return [p for p in visible_projects(user) if _can_operate_project(user, p.pk)]


def _mosaics_for(user, project_id=None):
    # a scan's live mosaic becomes its final mosaic when the final stitch succeeds: same record
    mosaics = _scoped(Mosaic, user).filter(status=JobStatus.SUCCEEDED).exclude(pyramid="")
    if project_id is not None:
        mosaics = mosaics.filter(scan__project_id=project_id)
    return mosaics.select_related("scan", "scan__sample").order_by("-created_at")


def _mosaic_option(m) -> dict:
    return {"id": m.pk, "label": m.label,
            "dzi_url": reverse("api:mosaic-dzi", args=[m.pk]), "width": m.width, "height": m.height,
            "pixel_size_nm": m.pixel_size_nm}


def sem_upload(request):
    """Upload an SEM image into a project (optionally a sample); the script shows what the file said."""
    projects = _operable_projects(request.user)
    sample = None
    if (sample_id := id_param(request.GET.get("sample"))) is not None:
        sample = _get(Sample, request.user, sample_id)
    project_id = sample.project_id if sample else id_param(request.GET.get("project"))
    samples = _scoped(Sample, request.user).filter(project__in=projects).select_related("project")
    return render(request, "frontend/sem_upload.html", {
        "projects": projects, "samples": samples, "sample": sample, "project_id": project_id,
        "formats": FORMATS_IN_WORDS,  # the picker offers what the importer reads
        "accept": ",".join(kind for kinds in FORMATS.values() for kind in kinds)})


def sem_pair(request, pk):
    """Register an SEM image to a mosaic: automatically or by clicked landmark pairs."""
    sem = _get(SEMImage, request.user, pk)
    mosaics = _mosaics_for(request.user, sem.project_id)
    registrations = sem.registrations.select_related("mosaic").order_by("-created_at")
    options = [_mosaic_option(m) for m in mosaics]
    return render(request, "frontend/sem_pair.html", {
        "sem": sem, "mosaics": mosaics, "mosaic_options": options, "registrations": registrations, "can_operate": _can_operate(request.user, sem),
        "pair_config": {"sem": {"id": sem.pk, "dzi_url": reverse("api:semimage-dzi", args=[sem.pk]) if sem.pyramid else None,
                                "width": sem.width, "height": sem.height, "pixel_size_nm": sem.pixel_size_nm},
                        "mosaics": options,
                        "selected": id_param(request.GET.get("mosaic"))}})


def registration_detail(request, pk):
    registration = _get(Registration, request.user, pk)
    pair_sets = list(registration.pair_sets.with_counts().order_by("-created_at", "-pk"))
    finished = [p.pk for p in pair_sets if p.status == JobStatus.SUCCEEDED]
    mosaic, sem = registration.mosaic, registration.sem_image
    return render(request, "frontend/registration.html", {
        "registration": registration, "mosaic": mosaic, "sem": sem, "pair_sets": pair_sets,
        **_suggested_tiles(registration),
        "can_operate": _can_operate(request.user, registration),
        "uncertain_frames": len(mosaic.uncertain_frames), "mosaic_frames": len((mosaic.report or {}).get("positions_px") or ()),
        "registration_config": {
            "id": registration.pk, "status": registration.status, "accepted": registration.accepted,
            "mosaic": {"id": mosaic.pk, "dzi_url": reverse("api:mosaic-dzi", args=[mosaic.pk]) if mosaic.pyramid else None,
                       "width": mosaic.width, "height": mosaic.height},
            "sem": {"id": sem.pk, "dzi_url": reverse("api:semimage-dzi", args=[sem.pk]) if sem.pyramid else None,
                    "width": sem.width, "height": sem.height},
            "viewer_url": f"{reverse('frontend:viewer')}?mosaic={mosaic.pk}&sem={registration.pk}&overlay=sem&mode=blend",
            # the grid previews the newest finished set; the page follows those still running
            "pair_set": finished[0] if finished else None,
            "running": [p.pk for p in pair_sets if p.status in (JobStatus.QUEUED, JobStatus.RUNNING)]}})


def _suggested_tiles(registration) -> dict:
    """The pairs form's tile size for this registration's overlap (the SEM image's footprint on the mosaic)."""
    from imaging.pairs import suggested_tile

    overlap = registration.overlap_px
    if overlap is None:
        return {"suggested_tile": 512}
    width, height = overlap
    tile = suggested_tile(width, height)
    return {"suggested_tile": tile, "overlap_px": (width, height), "tiles_fit": (width // tile) * (height // tile)}


def training_list(request):
    runs = _scoped(TrainingRun, request.user).select_related("project").order_by("-created_at", "-pk")
    query = request.GET.get("q", "").strip()
    if query:
        runs = runs.filter(name__icontains=query)
    status = request.GET.get("status", "")
    if status in JobStatus.values:
        runs = runs.filter(status=status)
    projects = _operable_projects(request.user)
    # Only registrations that can train: succeeded and with pairs cut from them. A run takes one pair set of each
    # (their sets cover the same places), the newest finished one unless chosen: each set is offered apart.
    finished = PairSet.objects.with_counts().filter(status=JobStatus.SUCCEEDED, pair_count__gt=0).order_by("-created_at", "-pk")
    registrations = [r for r in (_scoped(Registration, request.user)
                                 .filter(status=JobStatus.SUCCEEDED, mosaic__scan__project__in=projects)
                                 .select_related("mosaic", "sem_image", "mosaic__scan").order_by("-created_at")
                                 .prefetch_related(Prefetch("pair_sets", queryset=finished, to_attr="finished_pair_sets")))
                     if r.finished_pair_sets]
    chosen = [v for v in map(id_param, request.GET.getlist("registration")) if v is not None]
    asked = {v for v in map(id_param, request.GET.getlist("pair_set")) if v is not None}  # the registration page's link
    for r in registrations:
        r.pair_set_choice = next((p.pk for p in r.finished_pair_sets if p.pk in asked), r.finished_pair_sets[0].pk)
        if r.pair_set_choice in asked:
            chosen.append(r.pk)
    return render(request, "frontend/training_list.html", {
        "page": Paginator(runs, 24).get_page(request.GET.get("page")), "q": query, "status": status,
        "statuses": JobStatus.choices, "projects": projects, "registrations": registrations, "chosen": chosen})


def training_detail(request, pk):
    run = _get(TrainingRun, request.user, pk)
    model = TrainedModel.objects.filter(training_run=run).first()
    return render(request, "frontend/training_detail.html", {
        "run": run, "model": model, "can_operate": _can_operate(request.user, run),
        "registrations": run.registrations.select_related("mosaic", "sem_image"),
        "run_config": {"id": run.pk, "status": run.status, "step": run.step, "total_steps": run.total_steps,
                       "loss_history": run.loss_history, "samples": len(run.samples),
                       "can_operate": _can_operate(request.user, run)}})


def model_rows(metrics: dict) -> list[dict]:
    """One row per method (model first, then baselines) with each metric and whether it is the best of its column."""
    rows = [{"key": key, "label": label, "values": [(metrics.get(key) or {}).get(m) for m, _, _ in METRICS]}
            for key, label in BASELINES if isinstance(metrics.get(key), dict)]
    for col, (_, _, higher) in enumerate(METRICS):
        values = [r["values"][col] for r in rows if isinstance(r["values"][col], (int, float))]
        best = (max if higher else min)(values) if values else None
        for r in rows:
            r.setdefault("best", []).append(best is not None and r["values"][col] == best)
    for r in rows:
        r["cells"] = list(zip(r["values"], r["best"], strict=False))
    return rows


def model_list(request):
    models = _scoped(TrainedModel, request.user).select_related("project", "training_run").order_by("-created_at", "-pk")
    query = request.GET.get("q", "").strip()
    if query:
        models = models.filter(Q(name__icontains=query) | Q(project__name__icontains=query))
    page = Paginator(models, 12).get_page(request.GET.get("page"))
    items = [{"model": m, "rows": model_rows(m.metrics or {}), "metrics": m.metrics or {}} for m in page]
    return render(request, "frontend/model_list.html", {
        "page": page, "items": items, "q": query, "metric_headings": [h for _, h, _ in METRICS]})


def translate_context(scan, user) -> dict:
    """What the scan page needs for "Translate this mosaic": its finished mosaics and the project's models."""
    mosaics = scan.mosaics.filter(status=JobStatus.SUCCEEDED).exclude(pyramid="").order_by("-created_at")
    models = TrainedModel.objects.filter(project_id=project_id_of(scan)).order_by("-created_at")
    from mlcore.models import Translation

    done = (Translation.objects.filter(mosaic__scan=scan, live=False).select_related("model")
            .order_by("-created_at", "-pk")[:TRANSLATIONS_LISTED])
    return {"translate_mosaics": [{"pk": m.pk, "label": m.label} for m in mosaics.select_related("scan__sample")],
            "translate_models": models, "translations": done}


#: The scan page lists this many of its latest translations (the viewer's layers hold them all).
TRANSLATIONS_LISTED = 10
