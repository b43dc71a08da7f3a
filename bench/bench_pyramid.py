"""Deep Zoom pyramid generation: pyvips dzsave (imaging.pyramid.write_dzi) vs a plain OpenCV/numpy writer.

Same 16-bit synthetic IC image, same display window, same tile layout (254 px, overlap 1,
JPEG Q85), same run. Prints seconds per megapixel for both and their ratio, plus the cost of
the pyramidal TIFF master on its own.

Run: .venv/bin/python bench/bench_pyramid.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from imaging.imageio import apply_display_window, display_window, to_uint16  # noqa: E402
from imaging.pyramid import write_dzi, write_pyramidal_tiff  # noqa: E402
from tests.imaging.synthetic_ic import ic_layout  # noqa: E402


def plain_dzi(image8: np.ndarray, folder: Path, *, name="mosaic", tile=254, overlap=1, quality=85) -> int:
    """Reference writer: cv2.resize(INTER_AREA) per level + cv2.imencode per tile. Returns tile count."""
    h, w = image8.shape
    max_level = math.ceil(math.log2(max(w, h)))
    (folder / f"{name}_files").mkdir(parents=True)
    (folder / f"{name}.dzi").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?><Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="jpeg" Overlap="{overlap}" TileSize="{tile}"><Size Width="{w}" Height="{h}"/></Image>')
    level_img = image8
    count = 0
    for level in range(max_level, -1, -1):
        lh, lw = level_img.shape
        out = folder / f"{name}_files" / str(level)
        out.mkdir()
        for row in range(math.ceil(lh / tile)):
            for col in range(math.ceil(lw / tile)):
                x0, y0 = max(0, col * tile - overlap), max(0, row * tile - overlap)
                x1, y1 = min(lw, (col + 1) * tile + overlap), min(lh, (row + 1) * tile + overlap)
                ok, data = cv2.imencode(".jpg", level_img[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, quality])
                (out / f"{col}_{row}.jpeg").write_bytes(data.tobytes())
                count += 1
        if level:
            level_img = cv2.resize(level_img, (max(1, math.ceil(lw / 2)), max(1, math.ceil(lh / 2))),
                                   interpolation=cv2.INTER_AREA)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048² instead of 6144²")
    parser.add_argument("--repeat", type=int, default=2, help="best of N")
    args = parser.parse_args()
    side = 2048 if args.quick else 6144
    rng = np.random.default_rng(0)
    labels = ic_layout((side, side), feature_px=3.0, rng=rng)
    image = to_uint16(np.array([0.25, 0.75, 0.5], np.float32)[labels]
                       + rng.normal(0, 0.02, labels.shape).astype(np.float32))
    window = display_window(image)
    mpx = image.size / 1e6
    print(f"image {side}×{side} uint16 = {mpx:.1f} Mpx, cpus={os.cpu_count()}")

    def best(fn):
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                fn(Path(tmp))
                times.append(time.perf_counter() - t)
        return min(times)

    t_vips = best(lambda d: write_dzi(image, d / "p", window=window, master=False))
    t_plain = best(lambda d: plain_dzi(apply_display_window(image, window), d / "p"))
    t_master = best(lambda d: write_pyramidal_tiff(image, d / "m.tif", pixel_size_nm=50.0))
    with tempfile.TemporaryDirectory() as tmp:
        n_vips = sum(1 for _ in (write_dzi(image, Path(tmp) / "p", window=window, master=False)
                                 / "mosaic_files").rglob("*.jpeg"))
        n_plain = plain_dzi(apply_display_window(image, window), Path(tmp) / "q")
    print(f"{'writer':<40} {'s':>7} {'s/Mpx':>7} {'tiles':>7}")
    print(f"{'pyvips dzsave (write_dzi, incl. 16→8)':<40} {t_vips:>7.2f} {t_vips / mpx:>7.3f} {n_vips:>7}")
    print(f"{'baseline: OpenCV/numpy writer (same)':<40} {t_plain:>7.2f} {t_plain / mpx:>7.3f} {n_plain:>7}")
    print(f"{'pyramidal TIFF master (16-bit deflate)':<40} {t_master:>7.2f} {t_master / mpx:>7.3f}")
    print(f"\nspeed-up of dzsave over the plain writer: {t_plain / t_vips:.2f}x")


if __name__ == "__main__":
    main()
