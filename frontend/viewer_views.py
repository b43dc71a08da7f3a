"""The deep-zoom viewer page: which layers exist for the objects named in the query, and how each maps to the mosaic."""
from __future__ import annotations

from django.http import Http404
from django.shortcuts import render
from django.urls import reverse

from imaging.models import Mosaic, Registration, SEMImage
from mlcore.models import Translation
from ssumweb.access import for_user

from .views import id_param

IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def _get_param(request, model, name):
    value = request.GET.get(name, "")
    if not value:
        return None
    pk = id_param(value)
    if pk is None:
        raise Http404(f"{name} must be a whole number.")
    obj = for_user(model.objects.all(), request.user, model.PROJECT_PATH).filter(pk=pk).first()
    if obj is None:
        raise Http404(f"No such {model._meta.verbose_name}.")
    return obj


def _matrix(value) -> list[list[float]] | None:
    """A 3×3 (or 2×3) JSON matrix as 3×3 floats, or None when it is missing or degenerate."""
    try:
        rows = [[float(v) for v in row] for row in value][:3]
    except (TypeError, ValueError):
        return None
    if len(rows) == 2:
        rows.append([0.0, 0.0, 1.0])
    if len(rows) != 3 or any(len(r) != 3 for r in rows) or rows[0][0] * rows[1][1] - rows[0][1] * rows[1][0] == 0:
        return None
    return rows


def display_window(pyramid: str, unit: str) -> dict | None:
    """The 16-bit values a pyramid's black and white tiles stand for (its display.json), as {low, high, unit}, or
    None when the pyramid does not say: a line profile then reads in display grey."""
    from imaging.imageio import ImagingError
    from imaging.pyramid import read_dzi
    from ssumweb.media import absolute

    try:
        window = read_dzi(absolute(pyramid)).window
    except (ImagingError, OSError, ValueError, TypeError, KeyError):
        return None
    return {**window.to_dict(), "unit": unit} if window is not None else None


def viewer_layers(*, mosaic, translation, registration, sem) -> list[dict]:
    """Layers in display order; `transform` maps mosaic pixel (x, y) to the layer's pixel (x, y)."""
    layers = []
    if mosaic is not None and mosaic.pyramid:
        layers.append({"key": "mosaic", "label": f"SSUM mosaic {mosaic.pk}", "dzi_url": reverse("api:mosaic-dzi", args=[mosaic.pk]),
                       "pixel_size_nm": mosaic.pixel_size_nm, "width": mosaic.width, "height": mosaic.height,
                       "transform": IDENTITY, "display_window": display_window(mosaic.pyramid, "camera counts")})
    px = mosaic.pixel_size_nm if mosaic is not None else None
    if translation is not None and translation.pyramid:
        # The translation is computed on the mosaic's own pixel grid.
        layers.append({"key": "translation", "label": f"SEM-like ({translation.model.name})",
                       "dzi_url": reverse("api:translation-dzi", args=[translation.pk, "output"]),
                       "pixel_size_nm": px, "width": mosaic.width if mosaic else None, "transform": IDENTITY})
    if registration is not None and registration.sem_image.pyramid:
        sem_image = registration.sem_image
        transform = _matrix(registration.mosaic_to_sem)
        if transform is None and px and sem_image.pixel_size_nm:
            ratio = px / sem_image.pixel_size_nm
            transform = [[ratio, 0.0, 0.0], [0.0, ratio, 0.0], [0.0, 0.0, 1.0]]
        layers.append({"key": "sem", "label": f"Registered SEM {sem_image.name}",
                       "dzi_url": reverse("api:semimage-dzi", args=[sem_image.pk]),
                       "pixel_size_nm": sem_image.pixel_size_nm, "width": sem_image.width, "height": sem_image.height,
                       "transform": transform or IDENTITY,
                       "display_window": display_window(sem_image.pyramid, "SEM image counts")})
    elif sem is not None and sem.pyramid:
        layers.append({"key": "sem", "label": f"SEM {sem.name}", "dzi_url": reverse("api:semimage-dzi", args=[sem.pk]),
                       "pixel_size_nm": sem.pixel_size_nm, "width": sem.width, "height": sem.height,
                       "transform": IDENTITY, "display_window": display_window(sem.pyramid, "SEM image counts")})
    if translation is not None and translation.risk_pyramid:
        # |G_BA(G_AB(x)) − x| / 2: bright where the SSUM image is not recovered from the SEM-like one
        layers.append({"key": "risk", "label": "Hallucination risk (bright: the SSUM image is not recovered from the "
                                               "SEM-like one there)",
                       "dzi_url": reverse("api:translation-dzi", args=[translation.pk, "risk"]),
                       "pixel_size_nm": px, "width": mosaic.width if mosaic else None, "transform": IDENTITY})
    return layers


def frame_outlines(mosaic) -> list[dict]:
    """Each stitched frame's useful field of view on the mosaic, as a circle in mosaic px (its
    centre x, y and radius r), with the scan's frame index and whether the stitcher placed it
    unsurely; [] for a mosaic stitched without a report or an instrument."""
    report, radius = mosaic.report or {}, mosaic.stitched_fov_radius_px
    positions, shape = report.get("positions_px") or [], report.get("frame_shape")
    if not positions or not shape or radius is None:
        return []
    rows, cols = shape  # the mosaic keeps the camera's pixel size
    index = report.get("frame_index") or list(range(len(positions)))
    unsure = set(mosaic.uncertain_frames)
    return [{"index": index[k], "x": x + (cols - 1) / 2.0, "y": y + (rows - 1) / 2.0, "r": radius,
             "uncertain": k in unsure} for k, (x, y) in enumerate(positions)]


#: The viewer opened with nothing to show lists this many of the user's latest mosaics.
RECENT_MOSAICS = 10


def viewer(request):
    mosaic = _get_param(request, Mosaic, "mosaic")
    translation = _get_param(request, Translation, "translation")
    registration = _get_param(request, Registration, "sem")
    sem = _get_param(request, SEMImage, "sem_image")
    if mosaic is None:
        mosaic = (translation.mosaic if translation else registration.mosaic if registration else None)
    if translation is not None and translation.mosaic_id != mosaic.pk:
        raise Http404("That translation is of another mosaic.")
    if registration is not None and registration.mosaic_id != mosaic.pk:
        raise Http404("That registration is of another mosaic.")
    layers = viewer_layers(mosaic=mosaic, translation=translation, registration=registration, sem=sem)
    others = {}
    if mosaic is not None:
        others = {"translations": mosaic.translations.exclude(pyramid="").select_related("model"),
                  "registrations": mosaic.registrations.select_related("sem_image")}
    elif not layers:  # nothing asked for: the latest mosaics to open instead of an empty page
        from .learning_views import _mosaics_for

        others = {"recent_mosaics": [{"pk": m.pk, "label": m.label}
                                     for m in _mosaics_for(request.user)[:RECENT_MOSAICS]]}
    frames = frame_outlines(mosaic) if layers and mosaic else []
    return render(request, "frontend/viewer.html", {
        "mosaic": mosaic, "translation": translation, "registration": registration, "layers": layers,
        "viewer_config": {"layers": layers, "frames": frames}, "uncertain_frames": sum(f["uncertain"] for f in frames),
        **others})
