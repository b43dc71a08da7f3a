"""The Django frame store: a captured frame goes to disk and into the database before the engine moves on."""
from __future__ import annotations

import json

import tifffile
from django.db import transaction
from django.urls import reverse

from imaging.imageio import atomic_path, write_image16
from imaging.models import Frame, Scan
from imaging.sem_service import write_thumbnail
from imaging.services import scan_topic
from ssumweb import events
from ssumweb.media import absolute

from .framestore import CapturedFrame


class DjangoFrameStore:
    """FrameStore for one scan: files under MEDIA_ROOT/scans/<id>/, rows in imaging.Frame."""

    def __init__(self, scan: Scan, *, pixel_size_nm: float, on_saved=None):
        self.scan_id = scan.pk
        self.total = scan.frames_total
        self.pixel_size_nm = pixel_size_nm
        self.on_saved = on_saved or (lambda frame_record, captured: None)

    def saved_indices(self) -> set[int]:
        return set(Frame.objects.filter(scan_id=self.scan_id).values_list("index", flat=True))

    def save(self, frame: CapturedFrame) -> None:
        folder = f"scans/{self.scan_id}"
        image_rel = f"{folder}/frames/{frame.index:06d}.tif"
        write_image16(absolute(image_rel), frame.image, pixel_size_nm=self.pixel_size_nm,
                      description=json.dumps(frame.metadata()))
        stack_rel = ""
        if frame.z_stack:
            stack_rel = f"{folder}/stacks/{frame.index:06d}.tif"
            with atomic_path(absolute(stack_rel)) as tmp:
                tifffile.imwrite(tmp, list(frame.z_stack), photometric="minisblack", compression="zlib",
                                 metadata={"z_positions_nm": list(frame.z_positions_nm)})
        write_thumbnail(frame.image, f"{folder}/thumbs/{frame.index:06d}.jpg")
        x, y, z = frame.measured_xyz_nm
        with transaction.atomic():
            record, _ = Frame.objects.update_or_create(scan_id=self.scan_id, index=frame.index, defaults=dict(
                row=frame.row, col=frame.col, commanded_x_nm=frame.commanded_xy_nm[0],
                commanded_y_nm=frame.commanded_xy_nm[1], measured_x_nm=x, measured_y_nm=y, measured_z_nm=z,
                focus_nm=frame.focus_nm, captured_at=frame.captured_at, exposure_ms=frame.exposure_s * 1000.0,
                image=image_rel, z_stack=stack_rel, width=frame.image.shape[1], height=frame.image.shape[0],
                focus_score=frame.focus_score, deflection_nm=frame.deflection_nm))
            done = Frame.objects.filter(scan_id=self.scan_id).count()
            events.publish(scan_topic(self.scan_id), "frame.saved", frame_id=record.pk, index=frame.index,
                           row=frame.row, col=frame.col, done=done, total=self.total,
                           thumbnail_url=reverse("api:frame-thumbnail", args=[record.pk]),
                           measured_xyz_nm=[x, y, z], deflection_nm=frame.deflection_nm, focus_nm=frame.focus_nm)
        self.on_saved(record, frame)
