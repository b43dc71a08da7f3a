"""Do two simulator frames of the same place agree with the simulator's own truth?

Not a timing. A perfect stage (``StageErrors.none()``), no camera noise, and each of the
simulator's frame-to-frame differences switched on alone: the field-dependent PSF (resolution
falling towards the field's edge), the defocus of each layer (the sphere rests on the tallest
feature under it, so the same layer is defocused differently from frame to frame), field
curvature, vignetting and the illumination's fall-off. For moves of a scan step (217 px, the
stitching bench's) and a few others, frame j's offset from frame i is refined (Gauss–Newton on
the raw frames, ``imaging.pairwise.refine_pair``) from the true offset, and its distance from the
truth printed: what any stitcher measures, however well it searches. The blur is a gather
model (each pixel sees the scene blurred by its own σ), which moves fine lines towards the
blurrier side where σ varies; see docs/physics.md.

    .venv/bin/python bench/sim_frame_consistency.py [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from imaging.pairwise import refine_pair  # noqa: E402
from instruments.sim import ssum  # noqa: E402
from instruments.sim.chip import Chip, scaled_layers  # noqa: E402
from instruments.sim.optics import SSUMOptics  # noqa: E402
from instruments.sim.world import SimWorld, StageErrors  # noqa: E402

MOVES_PX = ((217, 0), (-217, 0), (0, 217), (0, -217), (150, 150), (217, -20))


def world(seed: int, *, field_psf: bool, heights: float, curvature: bool, shading: bool) -> SimWorld:
    defaults = SSUMOptics()
    optics = SSUMOptics(vignetting=defaults.vignetting if shading else 0.0,
                        field_curvature_nm=defaults.field_curvature_nm if curvature else 0.0,
                        edge_resolution_factor=defaults.edge_resolution_factor if field_psf else 1.0)
    illumination = ssum.Illumination() if shading else ssum.Illumination(nonuniformity=0.0)
    return SimWorld(seed=seed, layout=Chip(seed=seed, layers=scaled_layers(heights)),
                    stage_errors=StageErrors.none(), optics=optics, illumination=illumination)


def frame_at(w: SimWorld, x_nm: float, y_nm: float):
    w.set_piezo_nm(x_nm, y_nm, 0.0)
    w.set_piezo_nm(x_nm, y_nm, min(max(w.contact_z_nm(), 0.0), 10_000.0))
    w.set_focus_nm(w.virtual_image_focus_nm())
    return w.render_frame(exposure_s=0.01, noise=False).astype(np.float32) / 65535.0, w.frame_to_chip()


def disagreements(w: SimWorld) -> list[float]:
    """Per move, |measured − true| offset (px) of frame j from frame i."""
    mask = w.fov_mask(fraction=0.8)
    x0, y0 = 40_000.0, 40_000.0
    first, to_chip_i = frame_at(w, x0, y0)
    pixel_nm = float(np.hypot(to_chip_i[0, 0], to_chip_i[1, 0]))
    out = []
    for dx, dy in MOVES_PX:
        second, to_chip_j = frame_at(w, x0 + dx * pixel_nm, y0 + dy * pixel_nm)
        true = np.linalg.solve(to_chip_i[:2, :2], to_chip_j[:2, 2] - to_chip_i[:2, 2])
        pair = refine_pair(first, second, true, mask=mask)
        out.append(float(np.hypot(*(np.asarray(pair.offset_px) - true))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cases = {
        "nothing (flat layers, uniform PSF, no shading)": dict(field_psf=False, heights=0.0, curvature=False,
                                                                shading=False),
        "field-dependent PSF": dict(field_psf=True, heights=0.0, curvature=False, shading=False),
        "layer heights x0.1 (defocus)": dict(field_psf=False, heights=0.1, curvature=False, shading=False),
        "field curvature + shading": dict(field_psf=False, heights=0.0, curvature=True, shading=True),
        "all (the stitching bench's flat chip, no noise)": dict(field_psf=True, heights=0.1, curvature=True,
                                                                  shading=True),
    }
    print(f"perfect stage, no noise, chip seed {args.seed}: |measured - true| offset, px, for moves "
          + " ".join(f"({dx:+d},{dy:+d})" for dx, dy in MOVES_PX))
    for label, options in cases.items():
        errors = disagreements(world(args.seed, **options))
        print(f"{label:<50} " + " ".join(f"{e:5.2f}" for e in errors) + f"   max {max(errors):.2f}", flush=True)


if __name__ == "__main__":
    main()
