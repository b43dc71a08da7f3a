"""Pyramids of a translated mosaic built from its files: the working set is libvips' tile
buffers, not the image (the web job must not grow with the mosaic)."""

import ctypes
import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from imaging.imageio import DisplayWindow, display_window
from imaging.pyramid import read_subsample, write_dzi_file

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_M_MMAP_THRESHOLD = -3


def _rss(field: str) -> int:
    line = next(x for x in _STATUS.read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) * 1024


def _outputs(folder: Path, n: int) -> tuple[Path, Path]:
    """A sem-like uint16 and a float32 risk map, written as run_translation writes them (tiled)."""
    rng = np.random.default_rng(n)
    sem, risk = folder / f"sem{n}.tif", folder / f"risk{n}.tif"
    tifffile.imwrite(sem, rng.integers(2000, 50000, (n, n), dtype=np.uint16), tile=(256, 256))
    tifffile.imwrite(risk, rng.random((n, n), dtype=np.float32) * 0.5, tile=(256, 256))
    return sem, risk


def _translation_pyramids(sem: Path, risk: Path, out: Path) -> None:
    """What mlcore.jobs.translation_work does once the outputs are written."""
    window = display_window(read_subsample(sem))
    write_dzi_file(sem, out / "sem", window=window, pixel_size_nm=30.0)
    scale = max(float(np.percentile(read_subsample(risk), 99.5)), 1e-6)
    write_dzi_file(risk, out / "risk", window=DisplayWindow(0, 65535), divide_by=scale, pixel_size_nm=30.0)


def _peak_growth(folder: str, sizes: list[int]) -> dict:
    """Peak RSS growth of ``_translation_pyramids`` per size, in this (fresh) process.

    glibc keeps freed blocks below its dynamic mmap threshold in its heaps, so RSS would show
    their fragmentation; with a fixed 1 MiB threshold RSS tracks live memory."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    folder = Path(folder)
    files = {size: _outputs(folder, size) for size in sizes}
    _translation_pyramids(*files[sizes[0]], folder / "warm")  # libvips' one-time set-up
    base, growth = _rss("VmRSS:"), {}
    for size, (sem, risk) in files.items():
        _CLEAR.write_text("5")  # resets VmHWM, the kernel's peak RSS, to the current RSS
        _translation_pyramids(sem, risk, folder / f"p{size}")
        growth[size] = _rss("VmHWM:") - base
    return growth


@pytest.mark.slow  # ~9–12 s on 2 shared cores: two 4096² pyramids and their masters
def test_translation_pyramids_memory_does_not_grow_with_the_mosaic(tmp_path):
    if not _CLEAR.exists() or not ctypes.util.find_library("c"):
        pytest.skip("needs Linux /proc/self/clear_refs and glibc")
    small, n = 1024, 4096
    # A fresh interpreter: what earlier tests left in this one (thread pools, heaps) blurs RSS.
    code = ("import json, sys; from tests.imaging.test_pyramid_memory import _peak_growth; "
            f"print(json.dumps(_peak_growth(sys.argv[1], [{small}, {n}])))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=120)
    assert done.returncode == 0, done.stderr
    growth = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    scaling = n * n * (2 + 4)  # 96 MiB of files; reading them whole (as before) peaked at +429 MiB
    # Measured +4 MiB at 1024², +6 to +17 MiB at 4096² (libvips' threads vary; strips of one tile
    # row grow with the width only); with libvips' own pyramidal-TIFF writer, which keeps the
    # lower levels in memory, it was +27 MiB.
    assert growth[n] < scaling / 4, growth
    assert growth[n] < growth[small] + 20 * 2 ** 20, growth
    assert (tmp_path / f"p{n}" / "sem" / "mosaic_files" / "12").is_dir()
    assert (tmp_path / f"p{n}" / "risk" / "mosaic.dzi").exists()
