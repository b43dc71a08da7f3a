"""Tiled translation of an 8192×8192 mosaic: the working set is bounded by the tile, not the
mosaic (the output arrays are the only thing that scales), and tiles equal a whole pass."""

import ctypes
import ctypes.util
from pathlib import Path

import numpy as np
import pytest
import torch

from mlcore.config import preset
from mlcore.data import Normalization
from mlcore.infer import TranslationModel, translate_mosaic, translate_whole
from mlcore.nets import build_generator, halo_for

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_M_MMAP_THRESHOLD = -3


def _rss(field: str) -> int:
    line = next(x for x in _STATUS.read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) * 1024


@pytest.fixture
def rss_follows_live_memory():
    """glibc keeps freed blocks below its (dynamic, up to 32 MiB) mmap threshold in the heap,
    so RSS would show the heap's fragmentation, not what is live.  With a fixed 1 MiB
    threshold every tile-sized buffer is mapped and unmapped, and RSS tracks live memory."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not _CLEAR.exists() or not hasattr(libc, "mallopt"):
        pytest.skip("needs Linux /proc/self/clear_refs and glibc")
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    yield
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # where the dynamic threshold ends up anyway


@pytest.mark.slow  # ~8 s of CPU: the tiny generator still runs twice over 67 Mpx
def test_8k_mosaic_memory_is_bounded_and_tiles_equal_whole(rss_follows_live_memory):
    torch.manual_seed(0)
    cfg = preset("tiny").replace(generator__features=1, generator__blocks=0)
    g_ab, g_ba = build_generator(cfg.generator), build_generator(cfg.generator)
    for g in (g_ab, g_ba):  # O(1) activations, non-trivial BN statistics
        for m in g.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, a=0.2)
        with torch.no_grad():
            g(torch.rand(2, 1, 32, 32) * 2 - 1)
    model = TranslationModel(g_ab.eval(), g_ba.eval(), config=cfg, norm_a=Normalization(0, 65535),
                             norm_b=Normalization(0, 65535), halo=halo_for(g_ab))
    n, small, tile = 8192, 2048, 1024
    mosaic = np.random.default_rng(0).integers(0, 65535, (n, n), dtype=np.uint16)
    outputs = {size: (np.ones((size, size), np.uint16), np.ones((size, size), np.float32))
               for size in (small, n)}  # preallocated and resident, as the CLI's memmaps
    translate_mosaic(model, mosaic[:tile, :tile], tile=tile)  # one-time oneDNN set-up
    base = _rss("VmRSS:")
    growth = {}
    for size, (sem, risk) in outputs.items():
        _CLEAR.write_text("5")  # resets VmHWM, the kernel's peak RSS, to the current RSS
        translate_mosaic(model, mosaic[:size, :size], tile=tile, batch_size=1, risk=True,
                         out=sem, risk_out=risk)
        growth[size] = _rss("VmHWM:") - base
    scaling = mosaic.nbytes + sum(a.nbytes for a in outputs[n])  # 512 MiB
    # 16× the pixels, the same working set (tile-sized buffers), up to allocator slack.
    assert growth[n] < growth[small] + 48 * 2 ** 20, growth
    assert growth[n] < scaling / 2, growth
    sem, risk = outputs[n]
    halo = 2 * model.halo  # the risk map composes both generators
    # Corners (the mosaic-edge reflection) and the interior; origins on the stride grid.
    for r0, c0 in ((0, 0), (5000, 3900), (n - 96, n - 96)):
        r1, c1 = min(r0 + 96, n), min(c0 + 96, n)
        a0, b0 = max(r0 - halo, 0), max(c0 - halo, 0)
        whole = translate_whole(model, mosaic[a0:min(r1 + halo, n), b0:min(c1 + halo, n)],
                                risk=True)
        crop = (slice(r0 - a0, r1 - a0), slice(c0 - b0, c1 - b0))
        expect = np.clip(np.rint(model.norm_b.from_unit(whole.sem_like[crop])), 0, 65535)
        assert np.abs(sem[r0:r1, c0:c1].astype(np.int64) - expect).max() <= 1
        assert np.abs(risk[r0:r1, c0:c1] - whole.risk[crop]).max() < 1e-4
    assert sem.std() > 100 and risk.max() > 0  # a real translation, not a constant
