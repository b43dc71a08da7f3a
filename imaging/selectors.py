"""Reads of the lab catalogue that pages and the API share, so that both offer the same choices."""
from __future__ import annotations

from django.db.models import Count, Q

from .models import SampleSurface, Scan


def calibration_scans(scan: Scan) -> list[Scan]:
    """Scans that can serve as ``scan``'s flat field: of bare silicon (or already the instrument's flat
    field), same project and instrument, frames of the same size (the newest 20, each with ``frame_count``).
    None before ``scan`` has a frame: its size is not known yet."""
    first = scan.frames.order_by("index").values("width", "height").first()
    if first is None:
        return []
    same_size = Q(frames__width=first["width"], frames__height=first["height"])
    current = scan.instrument.flatfield_calibration_id if scan.instrument_id else None
    return list(Scan.objects.filter(project_id=scan.project_id, instrument_id=scan.instrument_id)
                .filter(Q(sample__surface=SampleSurface.BARE_SILICON) | Q(pk=current))
                .exclude(pk=scan.pk).annotate(frame_count=Count("frames", filter=same_size))
                .filter(frame_count__gt=0).order_by("-created_at")[:20])


def flatfield_choices(scan: Scan) -> list[dict]:
    """The stitch form's flat fields for ``scan``, each ``{"value", "label", "selected"}``; ``value`` is what the
    form sends ("estimate", "calibration:<scan id>", "none"). The instrument's calibration comes selected where
    it is offered, as a stitch that names no flat field uses it (:func:`imaging.jobs.flatfield_options`)."""
    current = scan.instrument.flatfield_calibration_id if scan.instrument_id else None
    calibrations = calibration_scans(scan)
    chosen = current if any(c.pk == current for c in calibrations) else None
    choices = [{"value": "estimate", "label": "Estimated from this scan's frames", "selected": chosen is None}]
    for c in calibrations:
        frames = f"{c.frame_count} frame{'' if c.frame_count == 1 else 's'}"
        choices.append({"value": f"calibration:{c.pk}", "label": f"Calibration on bare silicon: {c.name} ({frames})",
                        "selected": c.pk == chosen})
    choices.append({"value": "none", "label": "None (the frames as captured)", "selected": False})
    return choices
