"""Imaging jobs: queue them (services side) and do them (task side), thin around the pure algorithms."""
from __future__ import annotations

import logging
import math
import os
import shutil

from django.conf import settings
from django.db import transaction

from ssumweb import events
from ssumweb.errors import DomainError, InvalidTransition
from ssumweb.models import JobStatus
from ssumweb.tasking import enqueue_after_commit

from .models import Mosaic, PairSet, Registration, RegistrationMethod, SampleSurface, Scan, ScanStatus

log = logging.getLogger(__name__)


def queue_mosaic(scan: Scan, *, flatfield: str | None = None, calibration_scan: Scan | None = None) -> Mosaic:
    """A stitch of ``scan`` queued, with the flat field :func:`flatfield_options` gives."""
    if scan.frames.count() == 0:
        raise DomainError("The scan has no frames to stitch yet.", field="scan", code="empty")
    if scan.sample.surface == SampleSurface.BARE_SILICON:
        # nothing to register the frames on: a bare wafer's scan is a flat field, not a mosaic
        raise DomainError(f"“{scan.sample.name}” is bare silicon: its scans are flat-field calibrations, with nothing "
                          "to stitch. Use this scan as the flat field of the chip's scans instead.",
                          field="scan", code="bare_silicon")
    options = flatfield_options(scan, flatfield, calibration_scan)
    from . import tasks

    with transaction.atomic():
        mosaic = Mosaic.objects.create(scan=scan, options=options)
        enqueue_after_commit(tasks.stitch_mosaic, mosaic)
    return mosaic


def flatfield_options(scan: Scan, flatfield: str | None = None, calibration_scan: Scan | None = None) -> dict:
    """A stitch's flat-field options. ``flatfield``: "estimate" (from the scan's own frames), "none",
    "calibration" (from ``calibration_scan``, frames of bare silicon through the same sphere), or None:
    the instrument's calibration (``Instrument.flatfield_calibration``) where it has one that can serve,
    else estimated (``calibration_skipped`` then says why the instrument's was not used)."""
    if flatfield is None:
        if calibration_scan is not None:
            flatfield = "calibration"
        else:
            instrument_calibration = scan.instrument.flatfield_calibration if scan.instrument_id else None
            if instrument_calibration is None:
                return {"flatfield": "estimate"}
            try:
                _check_calibration(scan, instrument_calibration)
            except DomainError as exc:
                return {"flatfield": "estimate", "calibration_skipped": exc.message}
            return {"flatfield": "calibration", "calibration_scan": instrument_calibration.pk}
    if flatfield == "calibration":
        _check_calibration(scan, calibration_scan)
        return {"flatfield": "calibration", "calibration_scan": calibration_scan.pk}
    if calibration_scan is not None:
        raise DomainError('A calibration scan is only used with flatfield "calibration".', field="calibration_scan")
    return {"flatfield": flatfield}


def set_flatfield_calibration(instrument, scan: Scan | None) -> None:
    """Make ``scan`` (bare silicon, taken on ``instrument``) the instrument's flat field; None: none."""
    if scan is not None:
        if scan.instrument_id != instrument.pk:
            raise DomainError("The scan was not taken on this instrument.", field="scan")
        if scan.sample.surface != SampleSurface.BARE_SILICON:
            raise DomainError(_not_bare(scan), field="scan")
        if not scan.frames.exists():
            raise DomainError("The scan has no frames yet.", field="scan", code="empty")
    type(instrument).objects.filter(pk=instrument.pk).update(flatfield_calibration=scan)
    instrument.flatfield_calibration = scan


def _not_bare(scan: Scan) -> str:
    # a chip's structure would be divided out of every frame as if it were shading
    return (f"“{scan.name}” is a scan of “{scan.sample.name}”, which is not bare silicon: only a scan of a "
            "bare-silicon sample can be a flat field.")


def _check_calibration(scan: Scan, calibration: Scan | None) -> None:
    """A flat-field calibration must be frames of the same optics, the same size as the scan's."""
    if calibration is None:
        raise DomainError('flatfield "calibration" needs a calibration scan (bare silicon).', field="calibration_scan",
                          code="required")
    if calibration.pk == scan.pk:
        raise DomainError("A scan cannot be its own flat-field calibration: choose a scan of bare silicon.",
                          field="calibration_scan")
    if calibration.project_id != scan.project_id:
        raise DomainError("The calibration scan belongs to another project.", field="calibration_scan")
    if calibration.instrument_id != scan.instrument_id:
        raise DomainError("The calibration scan was taken on another instrument: its shading is not this scan's.",
                          field="calibration_scan")
    if calibration.sample.surface != SampleSurface.BARE_SILICON:
        raise DomainError(_not_bare(calibration), field="calibration_scan")
    sizes = set(calibration.frames.values_list("width", "height"))
    if not sizes:
        raise DomainError("The calibration scan has no frames.", field="calibration_scan", code="empty")
    own = set(scan.frames.values_list("width", "height"))
    if own and sizes != own:
        def described(pairs):
            return ", ".join(f"{w}×{h}" for w, h in sorted(pairs))

        raise DomainError(f"The calibration scan's frames are {described(sizes)} px; this scan's are "
                          f"{described(own)} px.", field="calibration_scan")


def queue_registration(mosaic: Mosaic, sem, *, method: str, landmarks: list, search_box=None,
                       user=None) -> Registration:
    if mosaic.status != JobStatus.SUCCEEDED:
        raise DomainError("The mosaic is not ready yet.", field="mosaic", code="invalid_state")
    if search_box is not None:
        x0, y0, x1, y1 = search_box
        if x0 < 0 or y0 < 0 or x1 > mosaic.width or y1 > mosaic.height:
            raise DomainError(f"The search box must lie within the mosaic (0…{mosaic.width} × 0…{mosaic.height} px).",
                              field="search_box")
        search_box = [math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)]
    if sem.project_id != mosaic.scan.project_id:
        raise DomainError("The SEM image belongs to another project.", field="sem_image")
    if method == RegistrationMethod.LANDMARKS:
        from .registration import check_landmarks

        try:
            check_landmarks(landmarks)
        except ValueError as exc:
            raise DomainError(str(exc), field="landmarks") from None
        for number, (mx, my, sx, sy) in enumerate(landmarks, start=1):
            for name, x, y, width, height in (("mosaic", mx, my, mosaic.width, mosaic.height),
                                              ("SEM", sx, sy, sem.width, sem.height)):
                if not (0 <= x <= width and 0 <= y <= height):
                    raise DomainError(f"Landmark {number}: the {name} point ({x:g}, {y:g}) lies outside the {name} "
                                      f"image (0…{width} × 0…{height} px).", field="landmarks")
    from . import tasks

    with transaction.atomic():
        registration = Registration.objects.create(mosaic=mosaic, sem_image=sem, method=method, landmarks=landmarks,
                                                   search_box=search_box, created_by=user)
        enqueue_after_commit(tasks.register_images, registration)
    return registration


def accept_registration(registration: Registration) -> None:
    if registration.status != JobStatus.SUCCEEDED:
        raise InvalidTransition("Only a successful registration can be accepted.")
    Registration.objects.filter(pk=registration.pk).update(accepted=True)
    events.publish(events.topic_for("registration", registration.pk), "registration.accepted")


def queue_pairs(registration: Registration, *, pixel_size_nm=None, tile_px=512, stride_px=None, test_fraction=0.2,
                skip_uncertain=True) -> PairSet:
    if registration.status != JobStatus.SUCCEEDED:
        raise DomainError("The registration has not succeeded.", field="registration", code="invalid_state")
    _check_tile_fits(registration.mosaic, tile_px=tile_px, pixel_size_nm=pixel_size_nm)
    from . import tasks

    with transaction.atomic():
        pair_set = PairSet.objects.create(registration=registration, pixel_size_nm=pixel_size_nm, tile_px=tile_px,
                                          stride_px=stride_px or tile_px, test_fraction=test_fraction,
                                          skip_uncertain=skip_uncertain)
        enqueue_after_commit(tasks.extract_pairs, pair_set)
    return pair_set


def _check_tile_fits(mosaic: Mosaic, *, tile_px: int, pixel_size_nm: float | None) -> None:
    """Refuse a tile larger than the mosaic on the pairs' grid (imaging.pairs.resample_to_common_grid's size),
    which the job could only fail on."""
    if not (mosaic.width and mosaic.height):
        return  # a mosaic stitched before its size was recorded: the job finds out
    pixel_size_nm = pixel_size_nm or mosaic.pixel_size_nm
    f = pixel_size_nm / mosaic.pixel_size_nm  # mosaic px per grid px
    width, height = int(mosaic.width // f), int(mosaic.height // f)
    if width < 1 or height < 1:
        raise DomainError(f"A pixel size of {pixel_size_nm:g} nm leaves no pixel of the mosaic "
                          f"({mosaic.width} × {mosaic.height} px at {mosaic.pixel_size_nm:g} nm).", field="pixel_size_nm")
    if width * height > settings.IMAGE_MAX_PIXELS:  # the job would hold the mosaic resampled this fine
        raise DomainError(f"A pixel size of {pixel_size_nm:g} nm makes the {mosaic.width} × {mosaic.height} px mosaic "
                          f"{width:,} × {height:,} px, over the limit of {settings.IMAGE_MAX_PIXELS:,} pixels: choose "
                          "a coarser pixel size.", field="pixel_size_nm")
    if tile_px > min(width, height):
        raise DomainError(f"Tiles of {tile_px} px do not fit the mosaic ({width} × {height} px at {pixel_size_nm:g} nm): "
                          "choose smaller tiles" + (" or a finer pixel size." if f > 1 else "."), field="tile_px")


def queue_sem_pyramid(sem) -> None:
    from . import tasks

    transaction.on_commit(lambda: tasks.build_sem_pyramid.enqueue(sem.pk))


def requeue_lost_sem_pyramids() -> int:
    """Queue again the pyramid of every SEM image that has none and no build waiting: the embedded
    server starting after a crash, whose own worker was building it (the SEM page said "still being
    built" for ever). Returns how many."""
    from django_tasks_db.models import DBTaskResult

    from . import tasks
    from .models import SEMImage

    waiting = {tuple(args_kwargs.get("args") or ()) for args_kwargs in DBTaskResult.objects.ready().filter(
        task_path=tasks.build_sem_pyramid.module_path).values_list("args_kwargs", flat=True)}
    lost = [pk for pk in SEMImage.objects.filter(pyramid="").values_list("pk", flat=True) if (pk,) not in waiting]
    for pk in lost:
        tasks.build_sem_pyramid.enqueue(pk)
    return len(lost)


def scan_finished(scan: Scan) -> bool:
    return scan.status in (ScanStatus.COMPLETED, ScanStatus.ABORTED, ScanStatus.FAILED)


# --- the work, run by imaging.tasks in a task worker --------------------------------------------

def useful_fov_radius_px(instrument) -> float:
    """Radius (camera px) of the sphere's useful field of view: only the inner USEFUL_FOV_FRACTION,
    since the sphere's image darkens steeply toward its rim, which would make overlapping frames
    anti-correlated there."""
    from .stitching import USEFUL_FOV_FRACTION

    return USEFUL_FOV_FRACTION * instrument.fov_diameter_nm / 2.0 / instrument.pixel_size_nm


def fov_mask_for(instrument, shape_rc):
    """The sphere's useful circular field of view (:func:`useful_fov_radius_px`), centred on the
    frame, as a boolean mask."""
    return circular_mask(useful_fov_radius_px(instrument), shape_rc)


def circular_mask(radius_px: float, shape_rc):
    """A circle of ``radius_px`` centred on a (rows, cols) frame, as a boolean mask."""
    import numpy as np

    rows, cols = shape_rc
    yy, xx = np.mgrid[0:rows, 0:cols]
    return (xx - (cols - 1) / 2.0) ** 2 + (yy - (rows - 1) / 2.0) ** 2 <= radius_px**2


def stitch_work(mosaic: Mosaic, progress) -> dict:
    import numpy as np

    from ssumweb.media import absolute

    from .imageio import display_window, read_image16, write_image16
    from .stitching import stitch

    scan = mosaic.scan
    frames = list(scan.frames.order_by("index"))
    if not frames:
        raise DomainError("The scan has no frames to stitch.")
    shapes = {(f.height, f.width) for f in frames}
    if len(shapes) > 1:
        raise DomainError(f"The scan's frames have mixed sizes {sorted(shapes)}; they cannot be stitched together.")
    progress(0.05, f"Reading {_frames(len(frames))}…")
    images = [read_image16(absolute(f.image.name)) for f in frames]
    nominal = np.array([[f.commanded_x_nm, f.commanded_y_nm] for f in frames], dtype=np.float64)
    instrument = scan.instrument
    pixel_size_nm = instrument.pixel_size_nm if instrument else None
    if pixel_size_nm is None:
        raise DomainError("The scan has no instrument, so its pixel size is unknown.")
    fov_radius_px = useful_fov_radius_px(instrument)
    mask = circular_mask(fov_radius_px, images[0].shape)
    flatfield = flatfield_for(mosaic.options, mask, progress)
    result = stitch(images, nominal, pixel_size_nm=pixel_size_nm, fov_mask=mask, anchor="center", flatfield=flatfield,
                    stage_repeatability_nm=instrument.stage_repeatability_nm,
                    progress=lambda fraction, message: progress(0.15 + 0.55 * fraction, message))
    progress(0.7, "Writing the mosaic…")
    rel = f"scans/{scan.pk}/mosaics/{mosaic.pk}/mosaic.tif"
    write_image16(absolute(rel), result.image, pixel_size_nm=result.pixel_size_nm)
    window = display_window(result.image, mask=result.image > 0)
    Mosaic.objects.filter(pk=mosaic.pk).update(
        image=rel, pixel_size_nm=result.pixel_size_nm, width=result.image.shape[1], height=result.image.shape[0],
        origin_x_nm=result.origin_nm[0], origin_y_nm=result.origin_nm[1], display_low=window.low,
        display_high=window.high, report=_report_json(result.report, frames, fov_radius_px))
    progress(0.8, "Building the deep-zoom pyramid…")
    del images  # streamed from the file just written: the frames and pyramid never share memory
    pyramid = build_pyramid_from_file(absolute(rel), window, f"scans/{scan.pk}/mosaics/{mosaic.pk}",
                                      pixel_size_nm=result.pixel_size_nm)
    Mosaic.objects.filter(pk=mosaic.pk).update(pyramid=pyramid)
    if scan.translate_with_id and mosaic.live:  # the scan was started with a model: translate what it saw
        from mlcore.services import queue_translation

        mosaic.status = JobStatus.SUCCEEDED  # the translation job only starts after this job has committed
        queue_translation(mosaic, scan.translate_with)
    return {"frames": len(frames), "size": list(result.image.shape)}


def flatfield_for(options: dict, mask, progress=lambda fraction, message: None):
    """What ``stitch`` is given for the mosaic's flat-field option: "estimate", None, or the
    :class:`FlatField` of the calibration scan's frames (bare silicon), combined by
    :func:`~imaging.flatfield.flatfield_from_calibration`."""
    from ssumweb.media import absolute

    from .flatfield import flatfield_from_calibration
    from .imageio import read_image16

    choice = options.get("flatfield", "estimate")
    if choice != "calibration":
        return None if choice == "none" else "estimate"
    calibration = Scan.objects.filter(pk=options.get("calibration_scan")).first()
    frames = list(calibration.frames.order_by("index")) if calibration else []
    if not frames:
        raise DomainError("The flat-field calibration scan no longer exists or has no frames; stitch again with "
                          "another one or with the flat field estimated.")
    progress(0.1, f"Combining the {_frames(len(frames), 'calibration frame')} of scan “{calibration.name}”…")
    images = [read_image16(absolute(f.image.name)) for f in frames]
    if any(image.shape != mask.shape for image in images):
        raise DomainError(f"The calibration scan's frames are not {mask.shape[1]}×{mask.shape[0]} px like this scan's.")
    try:
        return flatfield_from_calibration(images, mask=mask)
    except ValueError as exc:
        raise DomainError(f"The calibration scan cannot serve as a flat field: {exc}.") from None


def _frames(count: int, noun: str = "frame") -> str:
    """``count`` with ``noun``, plural where it is not one: "1 frame", "4 calibration frames"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _report_json(report, frames, fov_radius_px: float) -> dict:
    """The stitching report as stored with the mosaic; its frame numbers are positions in the list
    stitched, so ``frame_index`` maps them to the scan's frame indices (a scan cut short has gaps),
    and ``fov_radius_px`` is the useful field of view stitched (the instrument's record may change later)."""
    import json

    data = report.to_json()
    data = json.loads(data) if isinstance(data, str) else data
    data["frame_index"] = [f.index for f in frames]
    data["fov_radius_px"] = float(fov_radius_px)
    return data


def build_pyramid_for(image, window, folder: str, *, pixel_size_nm: float) -> str:
    """A new DZI pyramid folder under `folder` (a fresh name each time, so cached tiles never go stale)."""
    from ssumweb.media import absolute

    from .pyramid import write_dzi

    rel = _fresh_pyramid_name(folder)
    write_dzi(image, absolute(rel), name="mosaic", window=window, pixel_size_nm=pixel_size_nm)
    return rel


def build_pyramid_from_file(path, window, folder: str, *, pixel_size_nm: float, divide_by: float | None = None) -> str:
    """`build_pyramid_for` of an image file, streamed (memory independent of the image's size)."""
    from ssumweb.media import absolute

    from .pyramid import write_dzi_file

    rel = _fresh_pyramid_name(folder)
    write_dzi_file(path, absolute(rel), name="mosaic", window=window, divide_by=divide_by,
                   pixel_size_nm=pixel_size_nm)
    return rel


def _fresh_pyramid_name(folder: str) -> str:
    import uuid

    return f"{folder}/pyramid-{uuid.uuid4().hex[:8]}"


def sem_pyramid_work(sem_id: int) -> dict:
    from ssumweb.media import absolute

    from .imageio import DisplayWindow
    from .models import SEMImage

    sem = SEMImage.objects.get(pk=sem_id)
    # Streamed from the stored 16-bit TIFF: a large SEM image is never read whole.
    pyramid = build_pyramid_from_file(absolute(sem.image.name), DisplayWindow(sem.display_low, sem.display_high),
                                      f"sem/{sem.project_id}/{sem.pk}", pixel_size_nm=sem.pixel_size_nm)
    SEMImage.objects.filter(pk=sem.pk).update(pyramid=pyramid)
    return {"pyramid": pyramid}


def registration_work(registration: Registration, progress) -> dict:
    import numpy as np

    from ssumweb.media import absolute

    from .imageio import read_image16
    from .pyramid import read_region
    from .registration import landmark_box, register, register_by_landmarks
    from .registration_checks import MAX_MOSAIC_TO_FOOTPRINT_AREA

    mosaic, sem = registration.mosaic, registration.sem_image
    progress(0.1, "Reading the SEM image and the part of the mosaic to search…")
    sem_image = read_image16(absolute(sem.image.name))
    # Only the part of the mosaic searched is read: a large mosaic is never decoded whole for it.
    if registration.method == RegistrationMethod.LANDMARKS:
        mosaic_xy, sem_xy = [p[:2] for p in registration.landmarks], [p[2:] for p in registration.landmarks]
        box = landmark_box(mosaic_xy, sem_xy, sem_image.shape, (mosaic.height, mosaic.width))
        # None: the fit's footprint misses the mosaic (clicks far from consistent); the fit says so
        part = read_region(absolute(mosaic.image.name), box) if box else np.zeros((0, 0), np.uint16)
        progress(0.2, "Fitting the landmarks, then refining them on the images…")
        result = register_by_landmarks(part, sem_image, mosaic_px_nm=mosaic.pixel_size_nm, sem_px_nm=sem.pixel_size_nm,
                                       mosaic_xy=mosaic_xy, sem_xy=sem_xy, origin=box[:2] if box else (0, 0))
    else:
        x0, y0, x1, y1 = registration.search_box or (0, 0, mosaic.width, mosaic.height)
        progress(0.2, "Sweeping rotation and scale, then polishing and checking each candidate…")
        result = register(read_region(absolute(mosaic.image.name), (x0, y0, x1, y1)), sem_image,
                          mosaic_px_nm=mosaic.pixel_size_nm, sem_px_nm=sem.pixel_size_nm)
        # the box's pixels are the mosaic's shifted by its corner
        result = result.in_larger_image(x0, y0)
    Registration.objects.filter(pk=registration.pk).update(
        mosaic_to_sem=result.mosaic_to_sem.tolist(), residual_px=_finite_or_none(result.residual_px),
        confidence=_finite_or_none(result.confidence), details=result.to_dict()["details"])
    if not result and registration.search_box and "footprint_share" in result.details:
        raise DomainError(f"Registration failed: the SEM image covers only 1/{1 / result.details['footprint_share']:.0f} "
                          f"of the search box's area, too little to check a match in all of it (at least "
                          f"1/{MAX_MOSAIC_TO_FOOTPRINT_AREA}); zoom the mosaic closer to where the SEM image lies")
    if not result:
        raise DomainError(f"Registration failed: {result.reason}")
    return {"residual_px": _finite_or_none(result.residual_px), "confidence": _finite_or_none(result.confidence)}


def _finite_or_none(value):
    import math

    return float(value) if value is not None and math.isfinite(value) else None


def pairs_work(pair_set: PairSet, progress) -> dict:
    """Cut LR/HR pairs over a registration's overlap and store each with its provenance."""
    import numpy as np

    from ssumweb.media import absolute

    from .imageio import read_image16, write_image16
    from .models import ImagePair
    from .pairs import cut_pairs, footprint_box, skipped_in_words
    from .pyramid import read_region

    registration = pair_set.registration
    mosaic, sem = registration.mosaic, registration.sem_image
    progress(0.1, "Resampling the mosaic and the SEM image to one pixel size…")
    sem_image = read_image16(absolute(sem.image.name))
    mosaic_to_sem = np.asarray(registration.mosaic_to_sem)
    # Only the SEM image's footprint of the mosaic is read: pairs can come from nowhere else, and a
    # large mosaic is never decoded whole for them (but on a grid whose pixels are no whole number
    # of mosaic pixels within MAX_GRID_PERIOD_PX, where a part's pixels would not be the whole's).
    f = (pair_set.pixel_size_nm or mosaic.pixel_size_nm) / mosaic.pixel_size_nm
    sized = bool(mosaic.width and mosaic.height)
    box = footprint_box(mosaic_to_sem, sem_image.shape, (mosaic.height, mosaic.width), grid_to_mosaic=f) if sized else None
    if sized and box is None:
        raise DomainError("The registered SEM image lies outside the mosaic: there is nothing to cut pairs from.")
    if box:
        mosaic_image, origin = read_region(absolute(mosaic.image.name), box), box[:2]
    else:
        mosaic_image, origin = read_image16(absolute(mosaic.image.name)), (0, 0)
    unsure = _unsure_area(mosaic, mosaic_image.shape, origin) if pair_set.skip_uncertain else None
    result = cut_pairs(mosaic_image, sem_image, mosaic_to_sem,
                       mosaic_px_nm=mosaic.pixel_size_nm, pixel_size_nm=pair_set.pixel_size_nm,
                       tile_px=pair_set.tile_px, stride_px=pair_set.stride_px, test_fraction=pair_set.test_fraction,
                       mosaic_valid=mosaic_image > 0, mosaic_unsure=unsure, registration={"id": registration.pk},
                       origin_px=origin, mosaic_shape=(mosaic.height, mosaic.width) if box else None)
    if not result.pairs:
        hint = (" Most of the mosaic lies over frames placed with low confidence: rescan with a Z-stack or more "
                "overlap, or keep those tiles." if result.skipped.get("uncertain_placement") else " Try smaller tiles.")
        skipped = skipped_in_words(result.skipped)
        raise DomainError(f"No tile of {pair_set.tile_px} px fits the registered overlap with enough structure"
                          f"{f': {skipped}' if skipped else ''}.{hint}")
    # Written in a staging folder (a name ssumweb.media.sweep_staging knows) renamed with the pairs' commit:
    # a crash or a cancel part-way leaves no PNG the catalogue does not know of.
    folder, staging = f"pairs/{pair_set.pk}", f"pairs/.{pair_set.pk}.tmp-set"
    records = []
    try:
        for number, pair in enumerate(result.pairs):
            lr_name, hr_name = f"{number:05d}_lr.png", f"{number:05d}_hr.png"
            write_image16(absolute(f"{staging}/{lr_name}"), pair.lr, pixel_size_nm=result.pixel_size_nm)
            write_image16(absolute(f"{staging}/{hr_name}"), pair.hr, pixel_size_nm=result.pixel_size_nm)
            x, y, x_end, _ = pair.box_px
            records.append(ImagePair(registration=registration, pair_set=pair_set, lr_image=f"{folder}/{lr_name}",
                                     hr_image=f"{folder}/{hr_name}", box_x=x, box_y=y, box_size=x_end - x,
                                     pixel_size_nm=result.pixel_size_nm, split=pair.split))
            progress(0.2 + 0.75 * (number + 1) / len(result.pairs), f"Pair {number + 1} of {len(result.pairs)}")
        with transaction.atomic():
            shutil.rmtree(absolute(folder), ignore_errors=True)  # only ever what an older crash left there
            os.replace(absolute(staging), absolute(folder))
            ImagePair.objects.bulk_create(records)
            PairSet.objects.filter(pk=pair_set.pk).update(pixel_size_nm=result.pixel_size_nm, skipped=result.skipped)
    except BaseException:
        shutil.rmtree(absolute(staging), ignore_errors=True)
        raise
    return {"pairs": len(records), "skipped": result.skipped}


def _unsure_area(mosaic, shape_rc, origin=(0, 0)):
    """Where the mosaic's report says frames were placed with low confidence, over the ``shape_rc``
    pixels from ``origin`` (x, y) of the mosaic (None: nowhere, or a mosaic stitched before reports
    listed them)."""
    import numpy as np

    from .stitching import frame_footprint

    unsure, radius = mosaic.uncertain_frames, mosaic.stitched_fov_radius_px
    if not unsure or radius is None or not mosaic.report.get("frame_shape"):
        return None
    positions = np.asarray(mosaic.report["positions_px"], float) - np.asarray(origin, float)
    return frame_footprint(shape_rc, positions, unsure, circular_mask(radius, mosaic.report["frame_shape"]))


def export_pairs_zip(pair_set: PairSet) -> str:
    """The pairs as imaging.pairs.export_zip writes them (made once, kept beside the pairs)."""
    from ssumweb.media import absolute

    from . import pairs as core
    from .imageio import read_image16, to_float32

    if pair_set.status != JobStatus.SUCCEEDED:
        raise InvalidTransition(f"Pair set {pair_set.pk} is {pair_set.status}: only finished pairs can be exported.")
    rel = f"pairs/{pair_set.pk}/pairs.zip"
    if not absolute(rel).exists():
        grid_to_mosaic = pair_set.pixel_size_nm / pair_set.registration.mosaic.pixel_size_nm

        def tile(p):
            box = (p.box_x, p.box_y, p.box_x + p.box_size, p.box_y + p.box_size)
            return core.TilePair(lr=to_float32(read_image16(absolute(p.lr_image.name))),
                                 hr=to_float32(read_image16(absolute(p.hr_image.name))), box_px=box,
                                 box_mosaic_px=core.box_in_mosaic(box, grid_to_mosaic), split=p.split,
                                 block=core.block_of(box, tile_px=pair_set.tile_px, stride_px=pair_set.stride_px))

        tiles = tuple(tile(p) for p in pair_set.pairs.order_by("pk"))
        core.export_zip(core.PairSet(pairs=tiles, pixel_size_nm=pair_set.pixel_size_nm, tile_px=pair_set.tile_px,
                                     stride_px=pair_set.stride_px or pair_set.tile_px, skipped=dict(pair_set.skipped or {}),
                                     registration={"id": pair_set.registration_id}),
                        absolute(rel))
    return rel
