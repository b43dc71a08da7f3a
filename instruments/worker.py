"""The hardware worker: owns one instrument's devices, runs its scans, streams its camera.

One process (or, on the embedded default, a few threads of the server process) per instrument.
Requests live in the database (Scan.requested_action) so a worker that was down picks them up;
channel-layer messages only wake it early and carry live-view and jog commands. The scan runs in
its own thread, so pause and abort are never blocked by it.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

import cv2
import numpy as np
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import close_old_connections
from django.utils import timezone

from imaging.imageio import apply_display_window, display_window
from imaging.models import SampleSurface, Scan, ScanStatus
from imaging.services import scan_topic, transition
from ssumweb import events
from ssumweb.workers import closing_connections

from .control import live_group, worker_group
from .engine import ScanEngine, ScanState
from .models import Instrument
from .plans import ScanSpec

log = logging.getLogger(__name__)

PREVIEW_MAX_PX = 640
PREVIEW_MIN_PERIOD_S = 1 / 25  # the preview never costs acquisition more than ~25 encodes a second


def connect_devices(instrument: Instrument):
    """Devices for an instrument record: the simulated bench for "sim", else the real drivers."""
    if "sim" in (instrument.piezo_address, instrument.focus_address, instrument.camera_address):
        from django.conf import settings

        from .bench_rig import start_bench_rig

        rig = start_bench_rig(seed=instrument.sim_seed, clock_rate=getattr(settings, "SIM_CLOCK_RATE", 1.0))
        return rig.devices, rig
    from .drivers.esp301 import ESP301FocusStage
    from .drivers.pco_camera import PcoCamera
    from .drivers.pi_e727 import E727AnalogFeedback, E727Piezo
    from .engine import Devices

    piezo = E727Piezo.connect(instrument.piezo_address)
    devices = Devices(piezo=piezo, focus=ESP301FocusStage.connect(instrument.focus_address),
                      camera=PcoCamera.open(instrument.camera_address), feedback=E727AnalogFeedback(piezo))
    return devices, None


SENSOR_PX = (2560, 2160)  # PCO.edge 5.5, (width, height)


def camera_roi(instrument: Instrument) -> tuple[int, int, int, int]:
    """The camera window around the sphere's image: frames are this, never the whole sensor."""
    if instrument.camera_roi:
        return tuple(int(v) for v in instrument.camera_roi)
    width, height = instrument.frame_width_px, instrument.frame_height_px
    x0, y0 = (SENSOR_PX[0] - width) // 2, (SENSOR_PX[1] - height) // 2
    return (x0, y0, x0 + width, y0 + height)


def spec_for(scan: Scan, instrument: Instrument, rig=None) -> ScanSpec:
    # Autofocus searches around the focus that is sharp for a surface in contact with the sphere.
    focus_start = instrument.focus_reference_nm if instrument.focus_reference_nm is not None else 0.0
    return ScanSpec(origin_nm=(scan.origin_x_nm, scan.origin_y_nm), area_nm=(scan.size_x_nm, scan.size_y_nm),
                    roi=camera_roi(instrument),
                    fov_diameter_nm=instrument.fov_diameter_nm, overlap=scan.overlap,
                    exposure_s=scan.exposure_ms / 1000.0, contact_setpoint_nm=scan.contact_setpoint_nm,
                    focus_mode="auto" if scan.autofocus else "last", focus_start_nm=focus_start,
                    z_planes=scan.z_planes, z_step_nm=scan.z_step_nm or 500.0)


class LivePreview:
    """Keeps the newest camera frame and publishes it as a small JPEG, latest-frame-wins."""

    def __init__(self, instrument_id: int):
        self.group = live_group(instrument_id)
        self._latest: np.ndarray | None = None
        self._lock = threading.Condition()
        self.seq = 0
        self.enabled = False

    def offer(self, frame: np.ndarray) -> None:
        with self._lock:
            self._latest = frame  # a newer frame replaces one not yet encoded
            self._lock.notify()

    def run_forever(self, stop: threading.Event) -> None:
        layer = get_channel_layer()
        while not stop.is_set():
            with self._lock:
                self._lock.wait_for(lambda: self._latest is not None or stop.is_set(), timeout=0.5)
                frame, self._latest = self._latest, None
            if frame is None:
                continue
            started = time.monotonic()
            try:
                self.seq += 1
                jpeg = encode_preview(frame)
                send_from_thread(layer, self.group, {"type": "live.frame", "jpeg": jpeg, "seq": self.seq,
                                                     "t": time.time()})
            except Exception:
                log.warning("live preview failed", exc_info=True)
            time.sleep(max(0.0, PREVIEW_MIN_PERIOD_S - (time.monotonic() - started)))


def send_from_thread(layer, group: str, message: dict, *, timeout_s: float = 2.0) -> None:
    """group_send from a plain thread, on the serving loop when the layer lives in this process.

    The in-memory layer's queues belong to the loop the consumers run on; async_to_sync would run
    the send on a fresh loop in another thread, which does not wake the consumers' loop (the frame
    then waits for unrelated I/O: ~0.4 s median in bench/bench_live.py). Redis layers talk over
    sockets, so async_to_sync is right for them."""
    from .consumers import serving_loop

    loop = serving_loop() if isinstance(layer, InMemoryChannelLayer) else None
    if loop is None:
        async_to_sync(layer.group_send)(group, message)
        return
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
    try:
        future.result(timeout_s)  # back-pressure: at most one preview in flight towards the loop
    except TimeoutError:
        future.cancel()
        raise


def encode_preview(frame: np.ndarray) -> bytes:
    """16-bit frame → downscaled, contrast-stretched 8-bit JPEG (encoded once for every viewer)."""
    scale = min(1.0, PREVIEW_MAX_PX / max(frame.shape))
    if scale < 1.0:
        frame = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", apply_display_window(frame, display_window(frame)), [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("could not encode a preview")
    return jpeg.tobytes()


class HardwareWorker:
    """Runs one instrument. `start()` returns at once; `stop()` retracts and closes the devices."""

    def __init__(self, instrument_id: int, *, poll_s: float = 0.5, devices=None, rig=None, on_frame_saved=None,
                 live_mosaics: bool = True):
        self.instrument_id = instrument_id
        self.poll_s = poll_s
        self.devices, self.rig = devices, rig
        self.on_frame_saved = on_frame_saved
        self.commands: queue.Queue[dict] = queue.Queue()
        self.preview = LivePreview(instrument_id)
        self.stop_event = threading.Event()
        self.engine: ScanEngine | None = None
        self.scan_id: int | None = None
        self.scan_thread: threading.Thread | None = None
        self.threads: list[threading.Thread] = []
        self.last_readout: dict = {}
        self.shutting_down = False
        self.live_mosaics = live_mosaics
        self.live_mosaic = None

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> HardwareWorker:
        instrument = Instrument.objects.get(pk=self.instrument_id)
        if self.devices is None:
            self.devices, self.rig = connect_devices(instrument)
        if self.rig is not None:  # the simulator knows its own calibration: record it, as at contact
            from .sim.world import FOCUS_REFERENCE_NM

            world = self.rig.world
            self.sim_chip = world.layout  # what the bench images unless a scan's sample is another surface
            x0, y0, width, height = world.default_roi
            pitch = world.camera.pixel_pitch_nm
            Instrument.objects.filter(pk=instrument.pk).update(
                pixel_size_nm=world.optics.sample_pixel_nm(pitch, 0.0), fov_diameter_nm=2 * world.optics.fov_radius_nm(0.0),
                frame_width_px=width, frame_height_px=height, camera_roi=[x0, y0, x0 + width, y0 + height],
                focus_reference_nm=FOCUS_REFERENCE_NM)
        self._orphaned_scans_pause()
        for target, name in ((self._control_loop, "control"), (self._listen, "listen"),
                             (lambda: self.preview.run_forever(self.stop_event), "preview")):
            thread = threading.Thread(target=closing_connections(target), name=f"hw{self.instrument_id}-{name}",
                                      daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop owning the hardware. A scan in progress is left paused (resumable), not aborted."""
        self.shutting_down = True
        if self.engine is not None:
            self.engine.abort()
        self.stop_event.set()
        if self.scan_thread is not None:
            self.scan_thread.join(timeout_s)
        for thread in self.threads:
            thread.join(timeout_s)
        if self.rig is not None:
            self.rig.close()

    def _orphaned_scans_pause(self) -> None:
        """A scan left running by a worker that died: pause it so a user resumes it knowingly."""
        for scan in Scan.objects.filter(instrument_id=self.instrument_id, status=ScanStatus.RUNNING):
            transition(scan, ScanStatus.PAUSED, reason="The hardware worker restarted; resume to continue "
                                                       "from the first frame not yet saved.")

    # --- control loop -----------------------------------------------------------------------
    def _control_loop(self) -> None:
        last_beat = 0.0
        while not self.stop_event.is_set():
            try:
                close_old_connections()
                if time.monotonic() - last_beat >= 1.0:
                    self._heartbeat()
                    last_beat = time.monotonic()
                self._handle_requests()
                self._drain_commands()
            except Exception:
                log.exception("hardware worker %s control loop", self.instrument_id)
            try:
                self._apply(self.commands.get(timeout=self.poll_s))
            except queue.Empty:
                pass

    def _drain_commands(self) -> None:
        while True:
            try:
                self._apply(self.commands.get_nowait())
            except queue.Empty:
                return

    def _apply(self, command: dict) -> None:
        kind = command.get("command")
        if kind == "live":
            self.preview.enabled = bool(command.get("on"))
        elif kind == "jog" and self.engine is None:
            self._jog(command)
        # "scan" only wakes the loop: the request itself is read from the database.

    def _heartbeat(self) -> None:
        state = {"live": self.preview.enabled, "scan": self.scan_id, **self.last_readout}
        if self.engine is not None:  # the devices belong to the scan thread now; report its last readout
            self._publish_state(state)
            return
        try:
            x, y, z = self.devices.piezo.position_nm()
            state.update(x_nm=x, y_nm=y, z_nm=z, focus_nm=self.devices.focus.position_nm(),
                         deflection_nm=self.devices.feedback.deflection_nm())
        except Exception as exc:  # a device that does not answer is news, not a crash
            state["error"] = str(exc)
        self._publish_state(state)
        if self.preview.enabled:
            self._snap_live()

    def _publish_state(self, state: dict) -> None:
        Instrument.objects.filter(pk=self.instrument_id).update(heartbeat_at=timezone.now(), worker_state=state)
        events.publish(events.topic_for("instrument", self.instrument_id), "instrument.state", **state)

    def _snap_live(self) -> None:
        camera = self.devices.camera
        try:
            camera.trigger()
            self.preview.offer(camera.read(timeout_s=2.0))
        except Exception:
            log.warning("live snapshot failed", exc_info=True)

    def _jog(self, command: dict) -> None:
        x, y, _ = self.devices.piezo.position_nm()
        self.devices.piezo.move_nm(x=x + command.get("dx_nm", 0.0), y=y + command.get("dy_nm", 0.0))
        if command.get("dfocus_nm"):
            self.devices.focus.move_to_nm(self.devices.focus.position_nm() + command["dfocus_nm"])

    def _handle_requests(self) -> None:
        if self.engine is not None and self.scan_id is not None:
            scan = Scan.objects.get(pk=self.scan_id)
            if scan.requested_action == "pause":
                self.engine.pause("Paused by a user.")
            elif scan.requested_action == "abort":
                self.engine.abort()
            elif scan.requested_action == "resume" and scan.status == ScanStatus.PAUSED:
                Scan.objects.filter(pk=scan.pk).update(requested_action="")
                self.engine.resume()
            return
        pending = (Scan.objects.filter(instrument_id=self.instrument_id, requested_action__in=["start", "resume", "abort"])
                   .order_by("requested_at").first())
        if pending is None:
            return
        if pending.requested_action == "abort":
            if pending.status in (ScanStatus.PAUSED, ScanStatus.FAILED):
                transition(pending, ScanStatus.ABORTED, reason="Aborted by a user.")
                from .live_mosaic import close_left_over

                close_left_over(pending)
            else:
                Scan.objects.filter(pk=pending.pk).update(requested_action="")
            return
        self._start_scan(pending)

    # --- the scan ---------------------------------------------------------------------------
    def _start_scan(self, scan: Scan) -> None:
        from .django_store import DjangoFrameStore

        instrument = Instrument.objects.get(pk=self.instrument_id)
        if self.rig is not None:
            self.rig.world.mount(self._simulated(scan.sample))
        spec = spec_for(scan, instrument, self.rig)
        store = DjangoFrameStore(scan, pixel_size_nm=instrument.pixel_size_nm, on_saved=self._frame_saved)
        self.scan_id = scan.pk
        self.last_readout = {}  # the heartbeats report this scan's frames now, not the last scan's
        self.live_mosaic = self._live_mosaic_for(scan, instrument)
        self.engine = ScanEngine(self.devices, store, on_event=self._on_engine_event, on_live_frame=self.preview.offer)
        transition(scan, ScanStatus.RUNNING, reason="")
        self.scan_thread = threading.Thread(target=closing_connections(self._run_scan), args=(scan.pk, spec),
                                            name=f"hw{self.instrument_id}-scan{scan.pk}", daemon=True)
        self.scan_thread.start()

    def _simulated(self, sample):
        """What the simulated bench has under the sphere for a scan of ``sample``: its chip, or a wafer of
        bare silicon of the chip's size."""
        if sample.surface == SampleSurface.BARE_SILICON:
            from .sim.chip import bare_silicon

            return bare_silicon(self.sim_chip.bounds_nm, seed=self.rig.world.seed)
        return self.sim_chip

    def _live_mosaic_for(self, scan, instrument):
        if not self.live_mosaics or scan.sample.surface == SampleSurface.BARE_SILICON:
            return None  # bare silicon has nothing to stitch: its frames are a flat field
        from .live_mosaic import LiveMosaic

        try:
            return LiveMosaic(scan, instrument)
        except Exception:  # the live view is a convenience: never let it stop a scan
            log.warning("no live mosaic for scan %s", scan.pk, exc_info=True)
            return None

    def _frame_saved(self, record, captured) -> None:
        if self.live_mosaic is not None:
            self.live_mosaic.offer(record, captured)
        x, y, z = captured.measured_xyz_nm
        self.last_readout = {"x_nm": x, "y_nm": y, "z_nm": z, "focus_nm": captured.focus_nm,
                             "deflection_nm": captured.deflection_nm}
        if self.on_frame_saved is not None:
            self.on_frame_saved(record, captured)

    def _run_scan(self, scan_id: int, spec: ScanSpec) -> None:
        try:
            result = self.engine.run(spec)
            scan = Scan.objects.get(pk=scan_id)
            if self.shutting_down and result.state == ScanState.ABORTED:
                if scan.status == ScanStatus.RUNNING:
                    transition(scan, ScanStatus.PAUSED, reason="The hardware worker stopped; resume to continue.")
                return
            final = {ScanState.COMPLETED: ScanStatus.COMPLETED, ScanState.ABORTED: ScanStatus.ABORTED}.get(
                result.state, ScanStatus.FAILED)
            transition(scan, final, reason=result.reason)
            if self.live_mosaic is not None:  # the final stitch of what was captured
                self.live_mosaic.finish(final=result.saved > 0)
                self.live_mosaic = None
        except Exception as exc:
            log.exception("scan %s failed", scan_id)
            scan = Scan.objects.get(pk=scan_id)
            if ScanStatus.FAILED in _next_states(scan):
                transition(scan, ScanStatus.FAILED, reason=f"The scan stopped: {exc}")
        finally:
            if self.live_mosaic is not None:
                self.live_mosaic.finish(final=False)
            self.engine, self.scan_id, self.live_mosaic = None, None, None

    def _on_engine_event(self, event: dict) -> None:
        kind, payload = event["type"], event["payload"]
        scan_id = self.scan_id
        if scan_id is None:
            return
        if kind == "state":
            state, reason = payload["state"], payload.get("reason", "")
            scan = Scan.objects.get(pk=scan_id)
            if state == "paused" and scan.status == ScanStatus.RUNNING:
                transition(scan, ScanStatus.PAUSED, reason=reason)
            elif state == "running" and scan.status == ScanStatus.PAUSED:
                transition(scan, ScanStatus.RUNNING, reason="")
        elif kind == "progress":
            events.publish(scan_topic(scan_id), "scan.progress", **payload)
        elif kind == "fault":
            events.publish(scan_topic(scan_id), "scan.fault", **payload)

    # --- channel layer ------------------------------------------------------------------------
    def _listen(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        asyncio.run(self._listen_async(layer))

    async def _listen_async(self, layer) -> None:
        channel = await layer.new_channel()
        await layer.group_add(worker_group(self.instrument_id), channel)
        try:
            while not self.stop_event.is_set():
                try:
                    message = await asyncio.wait_for(layer.receive(channel), timeout=1.0)
                except TimeoutError:
                    continue
                self.commands.put(message)
        finally:
            await layer.group_discard(worker_group(self.instrument_id), channel)


def _next_states(scan: Scan) -> set[str]:
    from imaging.services import SCAN_TRANSITIONS

    return SCAN_TRANSITIONS[scan.status]


_embedded: list[HardwareWorker] = []


def start_embedded_workers() -> list[HardwareWorker]:
    """The embedded default: a worker thread group for every simulated instrument."""
    for instrument in Instrument.objects.filter(piezo_address="sim"):
        try:
            _embedded.append(HardwareWorker(instrument.pk).start())
        except Exception:
            log.exception("could not start the simulated instrument %s", instrument)
    return _embedded
