"""Changes to the lab catalogue: validate, apply atomically, publish after commit.

Views and the hardware worker call these; nothing else changes a scan's status.
"""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from instruments.scan_plan import InstrumentLimits, validate_plan
from ssumweb import events
from ssumweb.errors import DomainError, InvalidTransition
from ssumweb.models import Project

from .models import Sample, SampleSurface, Scan, ScanStatus

# The scan's life: planned → running ⇄ paused → completed | failed | aborted.
SCAN_TRANSITIONS: dict[str, set[str]] = {
    ScanStatus.PLANNED: {ScanStatus.RUNNING, ScanStatus.ABORTED},
    ScanStatus.RUNNING: {ScanStatus.PAUSED, ScanStatus.COMPLETED, ScanStatus.FAILED, ScanStatus.ABORTED},
    ScanStatus.PAUSED: {ScanStatus.RUNNING, ScanStatus.FAILED, ScanStatus.ABORTED},
    # A failed scan keeps its frames; once the cause is fixed it can go on where it stopped.
    ScanStatus.FAILED: {ScanStatus.RUNNING, ScanStatus.ABORTED},
    ScanStatus.COMPLETED: set(),
    ScanStatus.ABORTED: set(),
}

# What a user may ask of the hardware worker, from which states.
USER_ACTIONS: dict[str, set[str]] = {
    "start": {ScanStatus.PLANNED},
    "pause": {ScanStatus.RUNNING},
    "resume": {ScanStatus.PAUSED, ScanStatus.FAILED},
    "abort": {ScanStatus.PLANNED, ScanStatus.RUNNING, ScanStatus.PAUSED, ScanStatus.FAILED},
}


def scan_topic(scan_id: int) -> str:
    return events.topic_for("scan", scan_id)


def create_sample(*, project: Project, name: str, description: str = "", sim_seed: int | None = None,
                  surface: str = SampleSurface.CHIP, user=None) -> Sample:
    name = _sample_name(project, name)
    try:
        with transaction.atomic():
            return Sample.objects.create(project=project, name=name, description=description, sim_seed=sim_seed,
                                         surface=surface, created_by=user)
    except IntegrityError:  # the same name created at the same moment by another request
        raise _name_taken(name) from None


def update_sample(sample: Sample, changes: dict) -> Sample:
    """Apply a user's edit of a sample (its name checked as a new sample's is, against the others)."""
    if "name" in changes:
        changes = {**changes, "name": _sample_name(sample.project, changes["name"], exclude=sample.pk)}
    for key, value in changes.items():
        setattr(sample, key, value)
    try:
        with transaction.atomic():
            sample.save()
    except IntegrityError:
        raise _name_taken(sample.name) from None
    return sample


def _sample_name(project: Project, name: str, *, exclude: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise DomainError("A sample needs a name.", field="name")
    if Sample.objects.filter(project=project, name=name).exclude(pk=exclude).exists():
        raise _name_taken(name)
    return name


def _name_taken(name: str) -> DomainError:
    return DomainError(f"The project already has a sample called {name!r}.", field="name", code="unique")


def limits_for(instrument) -> InstrumentLimits:
    if instrument is None:
        return InstrumentLimits()
    return InstrumentLimits(fov_diameter_nm=instrument.fov_diameter_nm, travel_x_nm=instrument.travel_x_nm,
                            travel_y_nm=instrument.travel_y_nm)


def preview_plan(plan: dict, instrument=None):
    """The checked plan (its grid: rows × cols frames) a scan would get, without creating it (raises PlanError)."""
    return validate_plan(plan, limits_for(instrument))


def plan_scan(*, sample: Sample, name: str, plan: dict, instrument=None, translate_with=None, autofocus: bool = True,
              user=None) -> Scan:
    """Create a planned scan from plan values (raises PlanError naming the field at fault)."""
    if instrument is not None and instrument.project_id != sample.project_id:
        raise DomainError("The instrument belongs to another project.", field="instrument")
    if translate_with is not None and translate_with.project_id != sample.project_id:
        raise DomainError("The model belongs to another project.", field="translate_with")
    checked = validate_plan(plan, limits_for(instrument))
    with transaction.atomic():
        scan = Scan.objects.create(
            project_id=sample.project_id, sample=sample, instrument=instrument, name=name.strip() or "Scan",
            origin_x_nm=checked.origin_x_nm, origin_y_nm=checked.origin_y_nm, size_x_nm=checked.size_x_nm,
            size_y_nm=checked.size_y_nm, step_nm=checked.step_nm, overlap=checked.overlap,
            exposure_ms=checked.exposure_ms, contact_setpoint_nm=checked.contact_setpoint_nm,
            z_planes=checked.z_planes, z_step_nm=checked.z_step_nm, rows=checked.rows, cols=checked.cols,
            autofocus=autofocus, translate_with=translate_with, created_by=user,
        )
        events.publish(scan_topic(scan.pk), "scan.state", status=scan.status, reason="", **_times(scan))
    return scan


def request_action(scan: Scan, action: str) -> Scan:
    """Record what a user asked of a scan; the hardware worker carries it out at its next checkpoint."""
    if action not in USER_ACTIONS:
        raise DomainError(f"Unknown action {action!r}; one of {', '.join(USER_ACTIONS)}.", field="action")
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan.pk)
        if scan.status not in USER_ACTIONS[action]:
            raise InvalidTransition(f"Cannot {action} a scan that is {scan.status}.")
        if action == "abort" and scan.status == ScanStatus.PLANNED:
            return transition(scan, ScanStatus.ABORTED, reason="Aborted before it started.")
        if action in ("start", "resume") and scan.instrument_id is None:
            raise DomainError("This scan has no instrument to run on.", field="instrument")
        scan.requested_action, scan.requested_at = action, timezone.now()
        scan.save(update_fields=["requested_action", "requested_at"])
        events.publish(scan_topic(scan.pk), "scan.requested", action=action)
    _wake_worker(scan)
    return scan


def _wake_worker(scan: Scan) -> None:
    # The request is already in the database; this only saves the worker a poll interval.
    from instruments.control import notify_worker

    transaction.on_commit(lambda: notify_worker(scan.instrument_id, {"command": "scan", "scan_id": scan.pk}))


def transition(scan: Scan, to: str, *, reason: str = "") -> Scan:
    """Move a scan to a new status (the hardware worker's side of the state machine)."""
    with transaction.atomic():
        scan = Scan.objects.select_for_update().get(pk=scan.pk)
        if to not in SCAN_TRANSITIONS[scan.status]:
            raise InvalidTransition(f"A {scan.status} scan cannot become {to}.")
        now = timezone.now()
        scan.status, scan.status_reason = to, reason
        if to == ScanStatus.RUNNING:
            scan.started_at = scan.started_at or now
            scan.paused_at = scan.finished_at = None  # a failed scan resumed has not finished
        elif to == ScanStatus.PAUSED:
            scan.paused_at = now
        elif to in (ScanStatus.COMPLETED, ScanStatus.FAILED, ScanStatus.ABORTED):
            scan.finished_at = now
        if to != ScanStatus.PAUSED or scan.requested_action == "pause":
            scan.requested_action = ""
        scan.save(update_fields=["status", "status_reason", "started_at", "paused_at", "finished_at", "requested_action"])
        events.publish(scan_topic(scan.pk), "scan.state", status=to, reason=reason, **_times(scan))
    return scan


def _times(scan: Scan) -> dict:
    """The scan's started/paused/finished times as the API gives them (ISO 8601, or None)."""
    times = {}
    for key in ("started_at", "paused_at", "finished_at"):
        value = getattr(scan, key)
        times[key] = value.isoformat().replace("+00:00", "Z") if value else None
    return times
