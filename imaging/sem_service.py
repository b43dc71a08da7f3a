"""SEM uploads and frame thumbnails: the Django side of imaging.sem_import and imaging.imageio."""
from __future__ import annotations

import os
import uuid
from pathlib import PurePath

import numpy as np
from django.conf import settings
from django.db import transaction

from ssumweb.errors import DomainError
from ssumweb.media import absolute, media_root

from .imageio import ImageFileError, atomic_path, display_window, read_image16, to_uint16, write_image16
from .models import PixelSizeSource, SEMImage

THUMB_PX = 160
PREVIEW_PX = 512


class UploadTooLargeError(DomainError):
    status_code = 413
    code = "too_large"


def refuse_oversized(request) -> None:
    """Turn an upload stopped by SizeLimitUploadHandler into a clear 413 (nothing was stored)."""
    request.FILES  # noqa: B018 - parse the body so the handler can stop it
    if getattr(request, "upload_too_large", False):
        limit_gb = settings.UPLOAD_MAX_BYTES / 1024**3
        raise UploadTooLargeError(f"The file is larger than the upload limit of {limit_gb:.3g} GB.", field="file")


def safe_name(name: str) -> str:
    """A file name with every directory part and odd character removed (never used as a path alone)."""
    base = PurePath(name.replace("\\", "/")).name
    cleaned = "".join(c if c.isalnum() or c in "._- " else "_" for c in base).strip(" .")
    return cleaned[:120] or "upload"


def import_sem_upload(*, project, sample, upload, name: str, pixel_size_nm: float | None, page: int | None,
                      user=None) -> SEMImage:
    """Store an uploaded SEM image: read it, take its pixel size, cut the data bar, save as 16-bit TIFF."""
    from . import sem_import

    original_name = safe_name(upload.name or "upload")
    key = uuid.uuid4().hex
    folder = f"sem/{project.pk}/{key}"
    # Written and read in a staging folder (a name ssumweb.media.sweep_staging knows), renamed to
    # ``folder`` with the record's commit: a crash while the upload is stored or decoded leaves
    # no file the catalogue does not know of.
    staging = f"sem/{project.pk}/.{key}.tmp-upload"
    original_file = f"original{os.path.splitext(original_name)[1].lower() or '.bin'}"
    with atomic_path(absolute(f"{staging}/{original_file}")) as tmp:
        with open(tmp, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
    try:
        # messages name the user's file, not the stored original.<ext>
        sem = sem_import.read_sem(absolute(f"{staging}/{original_file}"), name=original_name, page=page,
                                  max_pixels=settings.IMAGE_MAX_PIXELS)
    except ValueError as exc:  # ImageFileError is the file's fault; any other, the page asked for
        _remove_folder(staging)
        field = "file" if isinstance(exc, ImageFileError) else "page"
        raise DomainError(str(exc), field=field, code="invalid_image") from None
    if sem.pixel_size_nm is None and pixel_size_nm is None:
        _remove_folder(staging)
        raise DomainError("The file carries no pixel size; enter it (nm per pixel).", field="pixel_size_nm", code="required")
    # A pixel size the user typed wins over the file's: the user is correcting a wrong calibration.
    size, source = (pixel_size_nm, PixelSizeSource.USER) if pixel_size_nm else (sem.pixel_size_nm, PixelSizeSource.METADATA)
    image16 = to_uint16(sem.image)  # stored 16-bit: the display window is in those units
    window = display_window(image16)
    try:
        write_image16(absolute(f"{staging}/sem.tif"), image16, pixel_size_nm=size)
        with transaction.atomic():
            os.replace(absolute(staging), absolute(folder))
            record = SEMImage.objects.create(
                project=project, sample=sample, name=(name.strip() or original_name)[:255], original_name=original_name,
                image=f"{folder}/sem.tif", original=f"{folder}/{original_file}", width=image16.shape[1], height=image16.shape[0],
                pixel_size_nm=size, pixel_size_source=source, page=sem.page, data_bar_rows=sem.data_bar_rows,
                metadata=sem.metadata, display_low=window.low, display_high=window.high, uploaded_by=user)
            from .jobs import queue_sem_pyramid

            queue_sem_pyramid(record)
    except Exception:
        _remove_folder(staging)
        _remove_folder(folder)
        raise
    return record


def _remove_folder(folder: str) -> None:
    import shutil

    shutil.rmtree(media_root() / folder, ignore_errors=True)


def thumbnail_for(image_rel: str) -> str:
    """The small JPEG beside a 16-bit frame (made on first request if the worker did not make it)."""
    return _jpeg_beside(image_rel, "thumbs", THUMB_PX)


def preview_for(image_rel: str) -> str:
    """A screen-sized JPEG of a 16-bit frame (at most ``PREVIEW_PX`` wide), made on first request."""
    return _jpeg_beside(image_rel, "previews", PREVIEW_PX)


def _jpeg_beside(image_rel: str, folder: str, size: int) -> str:
    parent, stem = os.path.split(image_rel)
    jpeg_rel = os.path.join(os.path.dirname(parent), folder, os.path.splitext(stem)[0] + ".jpg")
    if not absolute(jpeg_rel).exists():
        image = read_image16(absolute(image_rel))
        write_thumbnail(image, jpeg_rel, size=min(size, image.shape[1]))
    return jpeg_rel


def write_thumbnail(image: np.ndarray, thumb_rel: str, size: int = THUMB_PX) -> str:
    import cv2

    from .imageio import apply_display_window

    window = display_window(image)
    small = cv2.resize(image, (size, max(1, round(size * image.shape[0] / image.shape[1]))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", apply_display_window(small, window), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("could not encode a thumbnail")
    with atomic_path(absolute(thumb_rel)) as tmp:
        tmp.write_bytes(jpeg.tobytes())
    return thumb_rel
