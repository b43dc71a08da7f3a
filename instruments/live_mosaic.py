"""The mosaic growing while a scan runs, so everyone watching sees the sample appear.

Frames are handed over as they are saved; a thread of its own places them with the incremental
stitcher and publishes a small preview at most once a second, so acquisition never waits for it.
Whenever no frame waits, it settles the frames placed so far together (the stitcher's ``settle``:
a frame placed from one link on a grating may sit a period off until its other neighbours come),
at most a quarter of its time, and waking for it when a frame came too soon after the last. Its flat
field is the instrument's bare-silicon calibration, else estimated by each settling from the frames so far.
When the scan ends, the same Mosaic record is queued for the final job (global solve, flat field,
pyramid), which rebuilds it from the saved frames.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

import cv2
from django.db import close_old_connections, transaction
from django.urls import reverse
from django.utils import timezone

from imaging.imageio import apply_display_window, atomic_write_bytes, display_window, read_image16
from imaging.jobs import flatfield_for, flatfield_options, fov_mask_for
from imaging.models import Mosaic, Scan
from imaging.services import scan_topic
from ssumweb import events
from ssumweb.media import absolute
from ssumweb.models import JobStatus
from ssumweb.tasking import enqueue_after_commit
from ssumweb.workers import closing_connections

log = logging.getLogger(__name__)

PREVIEW_MAX_PX = 1600
PUBLISH_EVERY_S = 1.0
#: Settling again waits at least this long, and this many times as long as the last settling took (on a
#: simulator scan 0.04–0.09 s at two frames, 0.8–1.7 s at sixteen).
SETTLE_EVERY_S = 2.0
SETTLE_SPACING = 3.0


def preview_name(mosaic: Mosaic) -> str:
    return f"scans/{mosaic.scan_id}/mosaics/{mosaic.pk}/live.jpg"


def translation_preview_name(mosaic: Mosaic) -> str:
    """The SEM-like live preview, same size as :func:`preview_name`'s (see live_translation)."""
    return f"scans/{mosaic.scan_id}/mosaics/{mosaic.pk}/live-translation.jpg"


class LiveMosaic:
    def __init__(self, scan: Scan, instrument, *, translator=None):
        self.scan_id = scan.pk
        self.instrument = instrument
        resumed = Mosaic.objects.filter(scan=scan, live=True, status=JobStatus.RUNNING).first()
        self.mosaic = resumed or Mosaic.objects.create(scan=scan, live=True, status=JobStatus.RUNNING,
                                                       pixel_size_nm=instrument.pixel_size_nm,
                                                       message="Growing with the scan.")
        self.frames: queue.Queue = queue.Queue()
        if resumed is not None:  # a resumed scan: the mosaic grows on from the frames saved before the pause
            for frame in scan.frames.order_by("index"):
                self.frames.put((frame, None, frame.index))
        self.changed: list[tuple[int, int, int, int]] = []  # mosaic px boxes placed since the last publish
        self.translator = translator if translator is not None else self._translator_for(scan)
        self.closing = threading.Event()
        self.stitcher = None
        self.frame_index: list[int] = []  # the scan's index of each frame the stitcher holds
        self.last_published = 0.0
        self.next_settle = 0.0  # time.monotonic() from which the placed frames may be settled again
        self.unsettled = False  # frames placed since the last settling
        self.thread = threading.Thread(target=closing_connections(self._run), name=f"live-mosaic-{scan.pk}",
                                       daemon=True)
        self.thread.start()

    def _translator_for(self, scan: Scan):
        """A scan started with a model also grows its SEM-like translation (never stopping the scan)."""
        if not scan.translate_with_id:
            return None
        from .live_translation import LiveTranslation

        try:
            mosaic = self.mosaic
            return LiveTranslation(
                scan_id=scan.pk, mosaic_id=mosaic.pk, model_path=str(absolute(scan.translate_with.weights.name)),
                preview_path=absolute(translation_preview_name(mosaic)), preview_max_px=PREVIEW_MAX_PX,
                preview_url=lambda: reverse("api:mosaic-translation-preview", args=[mosaic.pk]) + f"?v={time.time_ns()}",
                busy=lambda: not self.frames.empty())
        except Exception:
            log.warning("no live translation for scan %s", scan.pk, exc_info=True)
            return None

    def offer(self, frame_record, captured) -> None:
        self.frames.put((captured.image, captured.commanded_xy_nm, captured.index))

    def _run(self) -> None:
        from imaging.stitching import IncrementalStitcher

        while True:
            try:  # with frames placed since the last settling, wake up to settle them when it is time
                item = self.frames.get(timeout=max(0.0, self.next_settle - time.monotonic()) if self.unsettled else None)
            except queue.Empty:
                if self.closing.is_set():
                    break
                self._settled_and_published()
                continue
            if item is None or self.closing.is_set():
                break
            image, xy, index = item
            try:
                if xy is None:  # a frame saved before the scan was resumed: read back from disk
                    image, xy = read_image16(absolute(image.image.name)), (image.commanded_x_nm, image.commanded_y_nm)
                if self.stitcher is None:
                    mask = fov_mask_for(self.instrument, image.shape)
                    self.stitcher = IncrementalStitcher(
                        frame_shape=image.shape, pixel_size_nm=self.instrument.pixel_size_nm, fov_mask=mask,
                        flatfield=self._flatfield(mask), stage_repeatability_nm=self.instrument.stage_repeatability_nm)
                try:
                    region = self.stitcher.add_frame(image, xy, anchor="center")
                finally:  # a frame the stitcher kept, even one it then failed to place, has a scan index
                    self.frame_index += [index] * (self.stitcher.frame_count - len(self.frame_index))
                # Region boxes are relative to the live mosaic, whose origin moves as it grows; the
                # translation keeps its work in mosaic coordinates.
                ox, oy = self.stitcher.origin_px
                x0, y0 = ox + region.x_px, oy + region.y_px
                self.changed.append((x0, y0, x0 + region.width_px, y0 + region.height_px))
                self.unsettled = True
                if self.frames.empty() and time.monotonic() >= self.next_settle:
                    self._settled_and_published()
                elif self.frames.empty() or time.monotonic() - self.last_published > PUBLISH_EVERY_S:
                    self._publish()
            except Exception:
                log.warning("live mosaic of scan %s could not place a frame", self.scan_id, exc_info=True)

    def _settled_and_published(self) -> None:
        """The frames placed so far placed again together (where they moved, the whole mosaic changed), then shown."""
        self.unsettled = False
        try:
            started = time.monotonic()
            region = self.stitcher.settle()
            self.next_settle = time.monotonic() + max(SETTLE_EVERY_S, SETTLE_SPACING * (time.monotonic() - started))
            if region is not None:
                ox, oy = self.stitcher.origin_px
                self.changed.append((ox, oy, ox + region.width_px, oy + region.height_px))
            self._publish()
        except Exception:
            log.warning("live mosaic of scan %s could not settle its frames", self.scan_id, exc_info=True)

    def _flatfield(self, mask):
        """The instrument's bare-silicon flat field where it can serve this scan, else "estimate" (the stitcher's
        settling estimates one from the frames so far, once there are a few): either way the live mosaic shows
        the sample, not the sphere's shading, and its links are measured on corrected frames."""
        from imaging.flatfield import FlatField

        try:
            flatfield = flatfield_for(flatfield_options(Scan.objects.get(pk=self.scan_id)), mask)
        except Exception:  # the live view is a convenience: the final stitch says what was wrong
            log.warning("live mosaic of scan %s: no flat-field calibration", self.scan_id, exc_info=True)
            return "estimate"
        return flatfield if isinstance(flatfield, FlatField) else "estimate"

    def _publish(self) -> None:
        if self.closing.is_set():  # a settling that outlasted finish()'s wait: the final stitch has the record now
            return
        mosaic_image = self.stitcher.mosaic()
        if self.translator is not None:  # a fresh array, never modified after this: safe to share
            self.translator.offer(mosaic_image, self.stitcher.origin_px, self.changed)
        self.changed = []
        scale = min(1.0, PREVIEW_MAX_PX / max(mosaic_image.shape))
        small = cv2.resize(mosaic_image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else mosaic_image
        covered = small > 0
        window = display_window(small, mask=covered) if covered.any() else display_window(small)
        ok, jpeg = cv2.imencode(".jpg", apply_display_window(small, window), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return
        atomic_write_bytes(absolute(preview_name(self.mosaic)), jpeg.tobytes())
        count = self.stitcher.frame_count
        Mosaic.objects.filter(pk=self.mosaic.pk).update(width=mosaic_image.shape[1], height=mosaic_image.shape[0])
        # frames that matched none of their overlaps stand where the stage put them: the page says so
        unmatched = [self.frame_index[k] for k in self.stitcher.unmatched_frames]
        events.publish(scan_topic(self.scan_id), "mosaic.live", mosaic_id=self.mosaic.pk, frames=count,
                       width=int(mosaic_image.shape[1]), height=int(mosaic_image.shape[0]), unmatched_frames=unmatched,
                       url=reverse("api:mosaic-preview", args=[self.mosaic.pk]) + f"?v={time.time_ns()}")
        self.last_published = time.monotonic()
        close_old_connections()

    def finish(self, *, final: bool) -> None:
        """Stop placing frames; when the scan is over, queue the final stitch of the same record.

        Frames still waiting are dropped: the final stitch rebuilds everything from the saved frames."""
        self.closing.set()
        self.frames.put(None)
        self.thread.join(timeout=30)
        if self.translator is not None:  # the final whole-mosaic Translation replaces its preview
            self.translator.close()
        if final:
            _queue_final_stitch(self.mosaic.pk, self.scan_id)
            self.mosaic.refresh_from_db()


def _queue_final_stitch(mosaic_id: int, scan_id: int) -> None:
    """The live mosaic's record queued for the final stitch of the scan's saved frames."""
    from imaging import tasks

    scan = Scan.objects.select_related("instrument__flatfield_calibration").get(pk=scan_id)
    with transaction.atomic():
        # the flat field the instrument is calibrated with, if it has one, else estimated from the frames
        Mosaic.objects.filter(pk=mosaic_id).update(status=JobStatus.QUEUED, message="Final stitch queued.",
                                                   options=flatfield_options(scan))
        enqueue_after_commit(tasks.stitch_mosaic, Mosaic.objects.get(pk=mosaic_id))


def close_left_over(scan: Scan) -> None:
    """A scan ended with no live mosaic growing (its worker stopped while it was paused, then it was
    aborted): the live record it left running gets what a scan ending so gets, the final stitch of
    its saved frames, or is cancelled where there are none. Left running, the scan page showed
    "Growing with the scan." for ever and offered no stitch."""
    for mosaic in Mosaic.objects.filter(scan=scan, live=True, status=JobStatus.RUNNING):
        if scan.frames.exists():
            _queue_final_stitch(mosaic.pk, scan.pk)
        else:
            Mosaic.objects.filter(pk=mosaic.pk).update(status=JobStatus.CANCELLED, finished_at=timezone.now(),
                                                       message="The scan ended without frames.")
