"""How fast the simulator feeds a camera: ms per SSUM frame beside a plain Gaussian blur.

    .venv/bin/python bench/bench_sim.py [--quick]

One core (OpenCV and BLAS threads pinned to 1). "cold" frames move the piezo before every
frame (new scene: rasterise, PSF/defocus blur, camera); "live" frames repeat the position
(the cached scene plus fresh camera noise, like a live view). The baseline is one
cv2.GaussianBlur(σ = 2 px) of a float32 frame of the same size, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from instruments.sim.dataset import simulate_sem  # noqa: E402
from instruments.sim.world import SimWorld  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm caches and code paths once
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 5 if args.quick else 25
    cv2.setNumThreads(1)
    world = SimWorld(seed=0)
    world.set_piezo_nm(40_000, 40_000, 0)
    world.set_piezo_nm(40_000, 40_000, world.contact_z_nm())
    world.set_focus_nm(world.virtual_image_focus_nm())
    print(f"{'case':<34}{'ms/frame':>10}{'fps':>8}{'baseline ms':>13}{'ratio':>8}")
    for size in (1024, 512):
        cx, cy = world.sphere_image_centre_px
        roi = (int(cx - size / 2 + 0.5), int(cy - size / 2 + 0.5), size, size)
        frame = np.random.default_rng(0).random((size, size), dtype=np.float32)
        base = _median_ms(lambda f=frame: cv2.GaussianBlur(f, (0, 0), 2.0), repeats)
        step = iter(range(10_000))

        def cold(roi=roi, step=step):
            x = 40_000 + 250 * (next(step) % 200)  # a fresh position (and chip region) every frame
            world.set_piezo_nm(x, 40_000, 0)
            world.set_piezo_nm(x, 40_000, world.contact_z_nm())
            world.set_focus_nm(world.virtual_image_focus_nm())
            world.render_frame(exposure_s=0.01, roi=roi)

        for name, fn in ((f"SSUM {size}x{size} cold (new position)", cold),
                         (f"SSUM {size}x{size} live (same position)",
                          lambda roi=roi: world.render_frame(exposure_s=0.01, roi=roi))):
            ms = _median_ms(fn, repeats)
            print(f"{name:<34}{ms:>10.1f}{1e3 / ms:>8.1f}{base:>13.2f}{ms / base:>8.1f}")
    sem_base = _median_ms(lambda: cv2.GaussianBlur(np.zeros((884, 1024), np.float32), (0, 0), 2.0), repeats)
    sem_ms = _median_ms(lambda: simulate_sem(seed=0, shape=(884, 1024), pixel_size_nm=20), max(3, repeats // 5))
    print(f"{'SEM 1024x884 with data bar':<34}{sem_ms:>10.1f}{1e3 / sem_ms:>8.1f}{sem_base:>13.2f}"
          f"{sem_ms / sem_base:>8.1f}")
    print("target: >= 20 fps for a 1024x1024 ROI on one core")


if __name__ == "__main__":
    main()
