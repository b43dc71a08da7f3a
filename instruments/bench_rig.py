"""A whole simulated bench: the wire-level fakes on free loopback ports sharing one simulated
world, and the *real* drivers connected to them.

Used by the tests, the demo, the benchmark and the embedded hardware worker::

    with start_bench_rig(seed=0) as rig:
        engine = ScanEngine(rig.devices, store)
        ...

``clock_rate`` > 1 makes simulated hardware time pass faster than wall time (tests).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from instruments.drivers.esp301 import ESP301FocusStage
from instruments.drivers.pco_camera import PcoCamera
from instruments.drivers.pi_e727 import E727AnalogFeedback, E727Piezo
from instruments.engine import Devices
from instruments.fakes.clock import SimClock
from instruments.fakes.e727 import DEFLECTION_CHANNEL, FakeE727
from instruments.fakes.esp301 import FakeESP301
from instruments.simcam import SimCamera

__all__ = ["BenchRig", "start_bench_rig", "FOCUS_ORIGIN_NM"]

# Mid-travel of the IMS100V (50 of 100 mm): where SimWorld's objective focuses on the contact plane.
# The focus stage position in nm is SimWorld's focus coordinate as it is.
FOCUS_ORIGIN_NM = 50_000_000.0


@dataclass
class BenchRig:
    world: object
    clock: SimClock
    e727: FakeE727
    esp301: FakeESP301
    simcam: SimCamera
    piezo: E727Piezo
    focus: ESP301FocusStage
    camera: PcoCamera
    feedback: E727AnalogFeedback

    @property
    def devices(self) -> Devices:
        return Devices(piezo=self.piezo, focus=self.focus, camera=self.camera, feedback=self.feedback)

    @property
    def addresses(self) -> dict[str, str]:
        return {"piezo": self.e727.address, "focus": self.esp301.address, "camera": "sim",
                "feedback": f"piezo?channel={DEFLECTION_CHANNEL}&nm_per_unit={self.e727.state.nm_per_volt:g}"}

    def hardware_busy_s(self) -> float:
        """Simulated time the hardware itself spent: moves + settling + exposures."""
        return self.e727.state.busy_s + self.esp301.state.busy_s + self.simcam.busy_s

    def simulator_s(self) -> float:
        """Wall time this CPU spent simulating the world: rendering frames, and the contact and
        deflection maths behind the E-727 fake's answers. A real rig spends none of it."""
        return self.simcam.render_s + self.e727.state.world_s

    def close(self) -> None:
        for closer in (self.piezo.close, self.focus.close, self.camera.close, self.e727.stop, self.esp301.stop):
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> BenchRig:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_bench_rig(*, world=None, seed: int = 0, clock_rate: float = 1.0, piezo_settle_s: float = 0.005,
                    piezo_velocity_um_s: float = 1000.0, focus_settle_s: float = 0.01,
                    focus_velocity_mm_s: float = 2.0, poll_s: float = 0.0002) -> BenchRig:
    """Start the fakes on free loopback ports around ``world`` and connect the real drivers.

    ``world`` defaults to ``instruments.sim.world.SimWorld(seed=seed)``.
    """
    if world is None:
        from instruments.sim.world import SimWorld
        world = SimWorld(seed=seed)
    clock = SimClock(rate=clock_rate)
    e727 = FakeE727(world, clock=clock, settle_s=piezo_settle_s, velocity_um_s=piezo_velocity_um_s,
                    seed=seed).start()
    esp301 = FakeESP301(world, clock=clock, settle_s=focus_settle_s, velocity_mm_s=focus_velocity_mm_s).start()
    simcam = SimCamera(world, clock=clock)
    try:
        piezo = E727Piezo.connect(e727.address, poll_s=poll_s)
        focus = ESP301FocusStage.connect(esp301.address, poll_s=poll_s)
    except Exception:
        e727.stop()
        esp301.stop()
        raise
    feedback = E727AnalogFeedback(piezo, channel=int(DEFLECTION_CHANNEL), nm_per_unit=e727.state.nm_per_volt)
    return BenchRig(world=world, clock=clock, e727=e727, esp301=esp301, simcam=simcam, piezo=piezo,
                    focus=focus, camera=PcoCamera(simcam), feedback=feedback)
