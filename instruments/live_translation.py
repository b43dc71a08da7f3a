"""The SEM-like mosaic growing beside the live SSUM mosaic while a scan runs.

Two parts, as everywhere here: :class:`CanvasTranslation` is the pure core (numpy + the mlcore
generator, no Django), :class:`LiveTranslation` the thread that feeds it snapshots of the live
canvas, writes the translated preview and publishes ``translation.live`` events.

Why not :class:`mlcore.infer.LiveTranslator`: it needs the final canvas size up front and pixels
that are final once acquired.  The live stitcher's canvas grows (its origin may move up/left) and
its feathered blend keeps changing pixels that later frames overlap.  So this keeps its own
bookkeeping: every canvas change (a placed frame's box) invalidates the translated pixels whose
input window — the box grown by the generator's halo — it reaches, and stale tiles are translated
again with :func:`mlcore.infer.translate_region` on the current canvas.  Each translated tile
therefore equals the same pixels of one whole translation of the canvas it was read from, and
once the queue is empty the whole result equals the translation of the final live canvas.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PREVIEW_NAME = "live-translation.jpg"


class CanvasTranslation:
    """Translation of a growing, changing canvas, kept current tile by tile.

    model : a :class:`mlcore.infer.TranslationModel` (single-channel).
    tile : tile side in canvas px (a positive multiple of the generator's stride). Small tiles
        keep each unit of work short, so the caller can yield to acquisition between tiles.

    Feed it with :meth:`update` (the whole canvas and the boxes that changed), spend time with
    :meth:`step`.  ``sem`` is (H, W) float32 in [0, 1] (SEM-like, normalised units), valid where
    ``valid`` is True; both follow the canvas as it grows.
    """

    def __init__(self, model, *, tile: int = 128) -> None:
        stride = int(model.stride)
        if tile < stride or tile % stride:
            raise ValueError(f"tile={tile} must be a positive multiple of the generator stride {stride}")
        if getattr(model, "in_channels", 1) != 1 or getattr(model, "out_channels", 1) != 1:
            raise ValueError("live translation needs a single-channel model (SSUM mosaics are grey)")
        self.model, self.tile, self.stride = model, int(tile), stride
        # Output pixel p depends on inputs within the halo of p, rounded out by one stride
        # (the strided down-sampling groups pixels in blocks of ``stride``).
        self.reach = int(model.halo) + 2 * stride
        self.canvas: np.ndarray | None = None
        self.origin = np.zeros(2, int)  # (x, y) mosaic px of canvas pixel (0, 0)
        self.sem = np.zeros((0, 0), np.float32)
        self.valid = np.zeros((0, 0), bool)    # translation current for the canvas it was read from
        self.touched = np.zeros((0, 0), bool)  # pixels a frame reached: the ones worth translating
        self.recent = np.zeros((0, 0), bool)   # changed by the latest update: likely to change again
        self.retranslations = 0  # growths that moved the tile grid off the stride (everything redone)

    # -- feeding -------------------------------------------------------------------------
    def update(self, canvas: np.ndarray, origin_xy_px: Sequence[int],
               changed_xyxy_px: Sequence[Sequence[int]]) -> None:
        """Take the current canvas.

        canvas : (H, W) uint16 live mosaic (0 where no frame reached).
        origin_xy_px : (x, y) mosaic px of ``canvas[0, 0]``.
        changed_xyxy_px : boxes (x0, y0, x1, y1) in mosaic px whose pixels changed since the
            previous update (frames placed); the canvas may also have grown.
        """
        canvas = np.asarray(canvas)
        if canvas.ndim != 2 or min(canvas.shape) < 8:
            raise ValueError(f"canvas must be (H, W) with both sides ≥ 8 px, got shape {canvas.shape}")
        origin = np.asarray(origin_xy_px, int).reshape(2)
        if self.canvas is None or canvas.shape != self.canvas.shape or not np.array_equal(origin, self.origin):
            self._regrid(canvas.shape, origin)
        self.canvas = canvas
        self.recent = np.zeros(canvas.shape, bool)
        h, w = canvas.shape
        ox, oy = self.origin
        for x0, y0, x1, y1 in changed_xyxy_px:
            c0, r0, c1, r1 = int(x0) - ox, int(y0) - oy, int(x1) - ox, int(y1) - oy
            if c1 <= 0 or r1 <= 0 or c0 >= w or r0 >= h:
                continue
            self.touched[max(r0, 0):r1, max(c0, 0):c1] = True
            self.recent[max(r0, 0):r1, max(c0, 0):c1] = True
            g = self.reach  # reflection at the borders stays inside this box (mirror images are nearer)
            self.valid[max(r0 - g, 0):r1 + g, max(c0 - g, 0):c1 + g] = False

    def _regrid(self, shape: tuple[int, int], origin: np.ndarray) -> None:
        """The canvas grew: re-anchor what was translated, or drop it where it no longer holds.

        Growth by a multiple of the stride to the left/top keeps every tile aligned the same way
        relative to the content, so translated pixels are re-anchored (copied to their new place)
        and only those whose input window reached the old border are invalidated (their border
        reflection is now real canvas).  Any other shift puts the content on a different phase of
        the generator's stride-``s`` sampling grid, so its output genuinely changes: then all of
        it is translated again (rare: the canvas grows with a margin of half a frame).
        """
        h, w = shape
        sem, valid, touched = np.zeros(shape, np.float32), np.zeros(shape, bool), np.zeros(shape, bool)
        if self.canvas is not None:
            ph, pw = self.canvas.shape
            dx, dy = (self.origin - origin).tolist()
            if dx < 0 or dy < 0 or dy + ph > h or dx + pw > w:
                raise ValueError("the canvas may only grow; it shrank or moved right/down")
            box = (slice(dy, dy + ph), slice(dx, dx + pw))
            touched[box] = self.touched
            if dx % self.stride == 0 and dy % self.stride == 0:
                sem[box], valid[box] = self.sem, self.valid
                g = self.reach
                if dy:
                    valid[dy:dy + g] = False
                if dx:
                    valid[:, dx:dx + g] = False
                if dy + ph != h:
                    valid[max(dy + ph - g, 0):dy + ph] = False
                if dx + pw != w:
                    valid[:, max(dx + pw - g, 0):dx + pw] = False
            else:
                self.retranslations += 1
        self.origin, self.sem, self.valid, self.touched = origin.copy(), sem, valid, touched
        self.recent = np.zeros(shape, bool)

    # -- working -------------------------------------------------------------------------
    def _tile_grid(self, mask: np.ndarray) -> np.ndarray:
        """(rows, cols) bool: tiles of the canvas grid holding any True pixel of ``mask``."""
        t = self.tile
        h, w = mask.shape
        padded = np.zeros((-(-h // t) * t, -(-w // t) * t), bool)
        padded[:h, :w] = mask
        return padded.reshape(padded.shape[0] // t, t, padded.shape[1] // t, t).any(axis=(1, 3))

    def pending(self) -> list[tuple[int, int]]:
        """Stale tile origins (row, col) px, settled ones first (not changed by the last update:
        the newest frame's neighbourhood will likely change again with the next frame)."""
        if self.canvas is None:
            return []
        stale = self._tile_grid(self.touched & ~self.valid)
        fresh = self._tile_grid(self.recent)
        order = sorted(zip(*np.nonzero(stale), strict=True), key=lambda rc: (bool(fresh[rc]), rc))
        return [(int(r) * self.tile, int(c) * self.tile) for r, c in order]

    @property
    def tiles_total(self) -> int:
        return 0 if self.canvas is None else int(self._tile_grid(self.touched).sum())

    @property
    def tiles_done(self) -> int:
        if self.canvas is None:
            return 0
        return int((self._tile_grid(self.touched) & ~self._tile_grid(self.touched & ~self.valid)).sum())

    def step(self, *, max_tiles: int = 1) -> int:
        """Translate up to ``max_tiles`` stale tiles of the current canvas; returns how many."""
        from mlcore.infer import translate_region

        if max_tiles < 1:
            raise ValueError(f"max_tiles={max_tiles} must be ≥ 1")
        tiles = self.pending()[:max_tiles]
        h, w = self.canvas.shape if self.canvas is not None else (0, 0)
        for r, c in tiles:
            rows, cols = (r, min(r + self.tile, h)), (c, min(c + self.tile, w))
            translate_region(self.model, self.canvas, rows=rows, cols=cols, tile=self.tile, batch_size=1,
                             risk=False, as_uint16=False, out=self.sem[rows[0]:rows[1], cols[0]:cols[1]])
            self.valid[rows[0]:rows[1], cols[0]:cols[1]] = True
        return len(tiles)

    def run_all(self) -> int:
        """Translate every stale tile (catching up at the end); returns how many."""
        done = 0
        while n := self.step(max_tiles=16):
            done += n
        return done


class LiveTranslation:
    """A low-priority thread translating the live canvas of one scan.

    ``offer`` hands it the newest canvas snapshot; snapshots that arrive while it is busy are
    merged (only the newest canvas is kept, the changed boxes accumulate), so it never queues
    work behind acquisition.  Between tiles it waits while ``busy()`` says frames are waiting to
    be placed, and its OS thread runs at the lowest scheduling priority.
    """

    def __init__(self, *, scan_id: int, mosaic_id: int, model_path: str, preview_path,
                 preview_url: Callable[[], str], busy: Callable[[], bool] = lambda: False,
                 preview_max_px: int = 1600, publish_every_s: float = 1.0, tile: int = 128) -> None:
        self.scan_id, self.mosaic_id = scan_id, mosaic_id
        self.model_path, self.preview_path, self.preview_url = model_path, preview_path, preview_url
        self.busy, self.preview_max_px, self.publish_every_s, self.tile = busy, preview_max_px, publish_every_s, tile
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.snapshot: tuple[np.ndarray, np.ndarray, list] | None = None
        self.core: CanvasTranslation | None = None
        self.last_published = 0.0
        self.published = 0
        self.seconds_translating = 0.0
        from ssumweb.workers import closing_connections  # Django pieces load lazily here, as in _publish

        self.thread = threading.Thread(target=closing_connections(self._run), name=f"live-translation-{scan_id}",
                                       daemon=True)
        self.thread.start()

    def offer(self, canvas: np.ndarray, origin_xy_px, changed_xyxy_px: list) -> None:
        """The newest canvas (it must not be modified afterwards) and the boxes changed since
        the previous offer."""
        with self.lock:
            boxes = (self.snapshot[2] if self.snapshot is not None else []) + list(changed_xyxy_px)
            self.snapshot = (canvas, np.asarray(origin_xy_px, int), boxes)
        self.wake.set()

    def close(self, *, timeout_s: float = 10.0) -> None:
        """Stop: the final whole-mosaic Translation replaces this preview."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=timeout_s)

    def _take(self) -> bool:
        with self.lock:
            snapshot, self.snapshot = self.snapshot, None
        if snapshot is None:
            return False
        self.core.update(*snapshot)
        return True

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: per thread
        except (AttributeError, OSError):
            pass
        try:
            from mlcore.infer import load_model

            self.core = CanvasTranslation(load_model(self.model_path, device="auto"), tile=self.tile)
        except Exception:
            log.warning("no live translation for scan %s", self.scan_id, exc_info=True)
            return
        dirty = False
        while not self.stopping.is_set():
            self.wake.wait(timeout=0.5)
            self.wake.clear()
            try:
                while not self.stopping.is_set():
                    if self.busy():  # a frame is waiting to be placed: acquisition first
                        time.sleep(0.05)
                        continue
                    took = self._take()
                    if self.core.canvas is None:
                        break
                    started = time.perf_counter()
                    done = self.core.step(max_tiles=1)
                    self.seconds_translating += time.perf_counter() - started
                    dirty = dirty or bool(done) or took
                    caught_up = not done and not took
                    if dirty and (caught_up or time.monotonic() - self.last_published > self.publish_every_s):
                        self._publish()
                        dirty = False
                    if caught_up:
                        break
            except Exception:
                log.warning("live translation of scan %s failed a step", self.scan_id, exc_info=True)
                time.sleep(0.5)

    def _publish(self) -> None:
        from imaging.imageio import atomic_write_bytes
        from ssumweb import events

        jpeg = preview_jpeg(self.core, max_px=self.preview_max_px)
        if jpeg is None:
            return
        atomic_write_bytes(self.preview_path, jpeg)
        from imaging.services import scan_topic

        events.publish(scan_topic(self.scan_id), "translation.live", mosaic_id=self.mosaic_id,
                       url=self.preview_url(), tiles_done=self.core.tiles_done, tiles_total=self.core.tiles_total)
        self.published += 1
        self.last_published = time.monotonic()


def preview_jpeg(core: CanvasTranslation, *, max_px: int) -> bytes | None:
    """The translated canvas at the live preview's scale (same size, so they sit side by side);
    black where nothing is translated yet or no frame reached."""
    import cv2

    from imaging.imageio import apply_display_window, display_window

    if core.canvas is None:
        return None
    shown = core.valid & (core.canvas > 0)
    image = np.where(shown, core.sem, 0).astype(np.float32)
    scale = min(1.0, max_px / max(image.shape))
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        shown = cv2.resize(shown.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) > 0
    window = display_window(image, mask=shown) if shown.any() else display_window(image)
    pixels = np.where(shown, apply_display_window(image, window), 0).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return jpeg.tobytes() if ok else None
