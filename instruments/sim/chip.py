"""Procedural IC-like samples, rendered lazily for any region at any nm/pixel.

A layout is a set of *blocks*: each block is one layer's material over the separable set
``X × Y`` where ``X`` and ``Y`` are unions of intervals (nm). A rectangle, a line grating and a
via array are all one block, and a block's exact area coverage of a pixel grid is the outer
product of two 1-D coverages, so rasterisation costs O(rows + cols) per block, never the
whole chip.

The chip is a grid of 20 µm cells; each cell's features come from an RNG seeded with
``(seed, cell column, cell row)``, so any region is generated without its neighbours and the
same seed always gives the same chip. Chip coordinates: ``(x, y)`` nm from the chip's top-left
corner, ``x`` along columns, ``y`` along rows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .exceptions import SimParameterError, check_range


@dataclass(frozen=True)
class Material:
    """Optical reflectance at 550 nm (normal incidence) and relative SE yield at 30 kV."""

    name: str
    reflectance: float
    se_yield: float


@dataclass(frozen=True)
class Layer:
    """One process layer: the height of its top surface above the substrate and its material."""

    name: str
    height_nm: float
    material: Material


SILICON = Material("Si", reflectance=0.37, se_yield=1.00)
POLY = Material("poly-Si", reflectance=0.33, se_yield=1.00)
TUNGSTEN = Material("W", reflectance=0.50, se_yield=1.45)
COPPER = Material("Cu", reflectance=0.60, se_yield=1.25)
ALUMINIUM = Material("Al", reflectance=0.91, se_yield=1.10)

#: Index 0 is the substrate (background); features are drawn lowest layer first.
DEFAULT_LAYERS: tuple[Layer, ...] = (
    Layer("substrate", 0.0, SILICON),
    Layer("poly", 150.0, POLY),
    Layer("contact", 350.0, TUNGSTEN),
    Layer("metal1", 500.0, COPPER),
    Layer("via", 900.0, TUNGSTEN),
    Layer("metal2", 1200.0, ALUMINIUM),
    Layer("pad", 1900.0, ALUMINIUM),
)
LAYER_INDEX = {layer.name: i for i, layer in enumerate(DEFAULT_LAYERS)}


def scaled_layers(factor: float, layers: tuple[Layer, ...] = DEFAULT_LAYERS) -> tuple[Layer, ...]:
    """The same stack with every height × ``factor`` (e.g. 0.1 for a nearly flat chip whose
    frames stay in focus everywhere: handy for stitching tests)."""
    check_range("factor", factor, low=0, high=10)
    return tuple(Layer(layer.name, layer.height_nm * factor, layer.material) for layer in layers)


def _interval_integral(edges: np.ndarray) -> np.ndarray:
    """Covered length up to each edge of a sorted interval list ``[a0, b0, a1, b1, ...]``."""
    lengths = edges[1::2] - edges[0::2]
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    integral = np.empty(edges.size)
    integral[0::2] = cumulative[:-1]
    integral[1::2] = cumulative[1:]
    return integral


@dataclass(frozen=True, eq=False)
class Block:
    """One layer over ``X × Y``; ``x_edges``/``y_edges`` are sorted ``[a0, b0, a1, b1, ...]`` nm."""

    layer: int
    x_edges: np.ndarray
    y_edges: np.ndarray
    x_integral: np.ndarray = field(repr=False)
    y_integral: np.ndarray = field(repr=False)
    #: Fraction of the block's area that is metal: 1 for real features, < 1 for the coarse
    #: stand-in of fine detail (text) when rendering at pixels far larger than that detail.
    density: float = 1.0

    @classmethod
    def from_edges(cls, layer: int, x_edges, y_edges, density: float = 1.0) -> Block:
        xe = np.asarray(x_edges, dtype=np.float64)
        ye = np.asarray(y_edges, dtype=np.float64)
        if xe.size < 2 or ye.size < 2 or xe.size % 2 or ye.size % 2:
            raise SimParameterError("block edges must be non-empty lists of (start, end) pairs")
        if np.any(np.diff(xe) < 0) or np.any(np.diff(ye) < 0):
            raise SimParameterError("block edges must be sorted and non-overlapping")
        return cls(layer, xe, ye, _interval_integral(xe), _interval_integral(ye), float(density))

    @classmethod
    def rect(cls, layer: int, x0: float, y0: float, x1: float, y1: float, density: float = 1.0) -> Block:
        return cls.from_edges(layer, (x0, x1), (y0, y1), density)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.x_edges[0], self.y_edges[0], self.x_edges[-1], self.y_edges[-1])


class Layout(Protocol):
    """What the renderers need from a sample."""

    layers: tuple[Layer, ...]

    @property
    def bounds_nm(self) -> tuple[float, float, float, float]: ...

    def blocks_in(self, x0: float, y0: float, x1: float, y1: float, *,
                  pixel_size_nm: float = 0.0) -> list[Block]:
        """Blocks overlapping the region, sorted by layer; a layout may return coarse stand-ins
        when ``pixel_size_nm`` is far larger than its finest detail."""
        ...


def _overlaps(block: Block, x0: float, y0: float, x1: float, y1: float) -> bool:
    bx0, by0, bx1, by1 = block.bbox
    return bx0 < x1 and bx1 > x0 and by0 < y1 and by1 > y0


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """An explicit sample (test targets, resolution charts): blocks on a substrate."""

    blocks: tuple[Block, ...]
    bounds: tuple[float, float, float, float]
    layers: tuple[Layer, ...] = DEFAULT_LAYERS

    @property
    def bounds_nm(self) -> tuple[float, float, float, float]:
        return self.bounds

    def blocks_in(self, x0, y0, x1, y1, *, pixel_size_nm: float = 0.0) -> list[Block]:
        return sorted((b for b in self.blocks if _overlaps(b, x0, y0, x1, y1)), key=lambda b: b.layer)


DUST = Material("particle", reflectance=0.08, se_yield=0.8)
#: Particles on a wafer that was wiped, not cleaned in a fab: ~0.5 in a 16 µm field of view.
PARTICLES_PER_MM2 = 2000.0


def bare_silicon(bounds: tuple[float, float, float, float], *, seed: int = 0,
                 particles_per_mm2: float = PARTICLES_PER_MM2) -> BlockLayout:
    """A polished silicon wafer over ``bounds`` (nm), the reference a flat field is calibrated on,
    with dark dust particles 0.3–1.5 µm across scattered on it (seeded)."""
    check_range("particles_per_mm2", particles_per_mm2, low=0, high=1e6)
    x0, y0, x1, y1 = map(float, bounds)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xD057])
    count = rng.poisson(particles_per_mm2 * (x1 - x0) * (y1 - y0) * 1e-12)
    blocks = []
    for cx, cy, w, h in zip(rng.uniform(x0, x1, count), rng.uniform(y0, y1, count),
                            rng.uniform(300, 1500, count), rng.uniform(300, 1500, count), strict=True):
        blocks.append(Block.rect(1, _q(cx - w / 2), _q(cy - h / 2), _q(cx + w / 2), _q(cy + h / 2)))
    return BlockLayout(blocks=tuple(blocks), bounds=(x0, y0, x1, y1),
                       layers=(DEFAULT_LAYERS[0], Layer("particle", 30.0, DUST)))


# ---------------------------------------------------------------- procedural chip


_FONT = {  # 5×7 glyphs, '#' = metal
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("####.", "....#", "....#", ".###.", "....#", "....#", "####."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": (".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
}


def text_proxy(text: str, *, layer: int, x0: float, y0: float, dot_nm: float) -> Block:
    """One block with the text's bounding box and its metal fraction, for coarse rendering."""
    dots = sum(bits.count("#") for ch in text for bits in _FONT[ch.upper()])
    w, h = (6 * len(text) - 1) * dot_nm, 7 * dot_nm
    return Block.rect(layer, x0, y0, x0 + w, y0 + h, density=dots * dot_nm ** 2 / (w * h))


def text_blocks(text: str, *, layer: int, x0: float, y0: float, dot_nm: float) -> list[Block]:
    """Blocks spelling ``text`` (digits, 'R', 'C', '-') with its top-left corner at (x0, y0) nm."""
    blocks = []
    for k, char in enumerate(text):
        glyph = _FONT.get(char.upper())
        if glyph is None:
            raise SimParameterError(f"text {text!r}: character {char!r} is not in the chip font")
        gx = x0 + k * 6 * dot_nm
        runs: dict[tuple[int, int], int] = {}  # (start col, end col) → first row of an open run
        for row, bits in enumerate((*glyph, ".....")):
            here = set()
            col = 0
            while col < 5:
                if bits[col] == "#":
                    end = col
                    while end < 5 and bits[end] == "#":
                        end += 1
                    here.add((col, end))
                    col = end
                else:
                    col += 1
            for span in [s for s in runs if s not in here]:  # a run ends: one block for its rows
                first = runs.pop(span)
                blocks.append(Block.rect(layer, gx + span[0] * dot_nm, y0 + first * dot_nm,
                                         gx + span[1] * dot_nm, y0 + row * dot_nm))
            for span in here:
                runs.setdefault(span, row)
    return blocks


def _periodic(start: float, stop: float, width: float, pitch: float) -> np.ndarray:
    """Edges of intervals of ``width`` every ``pitch`` inside [start, stop], centred."""
    count = max(1, int((stop - start - width) // pitch) + 1)
    offset = start + 0.5 * ((stop - start) - ((count - 1) * pitch + width))
    starts = offset + pitch * np.arange(count)
    return np.column_stack([starts, starts + width]).ravel()


def _q(value: float, grid: float = 10.0) -> float:
    """Snap to the design grid (10 nm), like a layout database."""
    return grid * round(value / grid)


def _motif(kind: str, box: tuple[float, float, float, float], rng: np.random.Generator) -> list[Block]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    L = LAYER_INDEX
    if kind == "lines":
        layer = L[rng.choice(["poly", "metal1", "metal2"])]
        width = _q(rng.uniform(80, 500))
        space = width if rng.random() < 0.5 else _q(rng.uniform(80, 500))
        across = _periodic(0.0, 1.0, 1.0, 1.0)  # placeholder, replaced below
        if rng.random() < 0.5:  # vertical lines
            across = _periodic(x0, x1, width, width + space)
            return [Block.from_edges(layer, across, (y0, y1))]
        across = _periodic(y0, y1, width, width + space)
        return [Block.from_edges(layer, (x0, x1), across)]
    if kind == "vias":
        layer = L[rng.choice(["contact", "via"])]
        size = _q(rng.uniform(100, 300))
        pitch = _q(size * rng.uniform(1.8, 3.0))
        ax0, ay0 = x0 + _q(rng.uniform(0, 0.3) * w), y0 + _q(rng.uniform(0, 0.3) * h)
        ax1, ay1 = x1 - _q(rng.uniform(0, 0.3) * w), y1 - _q(rng.uniform(0, 0.3) * h)
        blocks = []
        if layer == L["contact"] and rng.random() < 0.5:
            blocks.append(Block.rect(L["poly"], ax0 - 200, ay0 - 200, ax1 + 200, ay1 + 200))
        blocks.append(Block.from_edges(layer, _periodic(ax0, ax1, size, pitch),
                                       _periodic(ay0, ay1, size, pitch)))
        return blocks
    if kind == "wires":  # L and T shapes
        layer = L[rng.choice(["metal1", "metal2"])]
        blocks = []
        for _ in range(int(rng.integers(2, 5))):
            width = _q(rng.uniform(150, 500))
            cx, cy = _q(rng.uniform(x0, x1 - width)), _q(rng.uniform(y0, y1 - width))
            hx0, hx1 = sorted((cx, _q(rng.uniform(x0, x1))))
            vy0, vy1 = sorted((cy, _q(rng.uniform(y0, y1))))
            blocks.append(Block.rect(layer, hx0, cy, max(hx1, hx0 + width), cy + width))
            if rng.random() < 0.5:  # T: the stem leaves the middle of the bar
                cx = _q(0.5 * (hx0 + hx1))
            blocks.append(Block.rect(layer, cx, vy0, cx + width, max(vy1, vy0 + width)))
        return blocks
    if kind == "fill":
        layer = L[rng.choice(["metal1", "metal2"])]
        size = _q(rng.uniform(500, 1200))
        pitch = size + _q(rng.uniform(500, 1000))
        return [Block.from_edges(layer, _periodic(x0, x1, size, pitch), _periodic(y0, y1, size, pitch))]
    if kind == "pad":
        side = _q(rng.uniform(0.6, 0.9) * min(w, h))
        px, py = x0 + _q(0.5 * (w - side)), y0 + _q(0.5 * (h - side))
        blocks = [Block.rect(L["metal2"], px - 300, py - 300, px + side + 300, py + side + 300),
                  Block.rect(L["pad"], px, py, px + side, py + side)]
        return blocks
    if kind == "cross":
        arm, width = _q(rng.uniform(0.5, 0.8) * min(w, h)), _q(rng.uniform(300, 600))
        cx, cy = _q(x0 + 0.5 * w), _q(y0 + 0.5 * h)
        layer = L["metal2"]
        return [Block.rect(layer, cx - arm / 2, cy - width / 2, cx + arm / 2, cy + width / 2),
                Block.rect(layer, cx - width / 2, cy - arm / 2, cx - width / 2 + width, cy - width / 2),
                Block.rect(layer, cx - width / 2, cy + width / 2, cx + width / 2, cy + arm / 2)]
    raise SimParameterError(f"unknown motif {kind!r}")


_MOTIFS = ("lines", "vias", "wires", "fill", "pad", "cross")
_MOTIF_P = (0.38, 0.17, 0.17, 0.12, 0.08, 0.08)


COARSE_PIXEL_NM = 500.0  # at or above this pixel size, text is drawn as its density stand-in


@functools.lru_cache(maxsize=8192)
def _cell_blocks(seed: int, ix: int, iy: int, cell_nm: float) -> tuple[tuple[Block, ...], tuple[Block, ...]]:
    """(fine, coarse) blocks of one cell; cached because neighbouring frames revisit cells."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, ix, iy, 0x55AA])
    x0, y0 = ix * cell_nm, iy * cell_nm
    half, margin = cell_nm / 2, 0.02 * cell_nm
    blocks: list[Block] = []
    coarse: list[Block] = []
    for qy in range(2):
        for qx in range(2):
            box = (x0 + qx * half + margin, y0 + qy * half + margin,
                   x0 + (qx + 1) * half - margin, y0 + (qy + 1) * half - margin)
            kind = str(rng.choice(_MOTIFS, p=_MOTIF_P))
            blocks.extend(_motif(kind, box, rng))
    if rng.random() < 0.5:  # a cell label on the routing channel between quadrants
        dot = _q(rng.uniform(120, 250))
        where = dict(layer=LAYER_INDEX["metal2"], x0=x0 + margin, y0=y0 + half - 3.5 * dot, dot_nm=dot)
        label = f"R{iy:02d}C{ix:02d}"
        coarse = blocks + [text_proxy(label, **where)]
        blocks.extend(text_blocks(label, **where))
    else:
        coarse = list(blocks)
    blocks.sort(key=lambda b: b.layer)
    coarse.sort(key=lambda b: b.layer)
    return tuple(blocks), tuple(coarse)


@dataclass(frozen=True)
class Chip:
    """A seeded procedural IC of ``size_nm = (width, height)``; nothing is generated up front."""

    seed: int = 0
    size_nm: tuple[float, float] = (200_000.0, 200_000.0)
    cell_nm: float = 20_000.0
    layers: tuple[Layer, ...] = DEFAULT_LAYERS

    def __post_init__(self):
        for axis, value in zip("xy", self.size_nm, strict=True):
            check_range(f"chip_size_nm[{axis}]", value, low=200_000, high=100_000_000, unit="nm")
        check_range("cell_nm", self.cell_nm, low=5_000, high=100_000, unit="nm")

    @property
    def bounds_nm(self) -> tuple[float, float, float, float]:
        return (0.0, 0.0, float(self.size_nm[0]), float(self.size_nm[1]))

    def blocks_in(self, x0, y0, x1, y1, *, pixel_size_nm: float = 0.0) -> list[Block]:
        c = self.cell_nm
        which = 1 if pixel_size_nm >= COARSE_PIXEL_NM else 0
        nx, ny = int(self.size_nm[0] // c), int(self.size_nm[1] // c)  # whole cells only
        ix0, ix1 = max(0, math.floor(x0 / c)), min(nx - 1, math.floor(x1 / c))
        iy0, iy1 = max(0, math.floor(y0 / c)), min(ny - 1, math.floor(y1 / c))
        found = []
        for iy in range(iy0, iy1 + 1):
            for ix in range(ix0, ix1 + 1):
                found.extend(b for b in _cell_blocks(self.seed, ix, iy, c)[which]
                             if _overlaps(b, x0, y0, x1, y1))
        found.sort(key=lambda b: b.layer)
        return found


# ---------------------------------------------------------------- rasterisation


@dataclass(frozen=True)
class SampleMaps:
    """A rendered region. Arrays are (rows, cols) float32; pixel (r, c) covers
    ``[x0 + c·p, x0 + (c+1)·p) × [y0 + r·p, y0 + (r+1)·p)`` nm with ``(x0, y0) = origin_nm``."""

    height_nm: np.ndarray
    reflectance: np.ndarray
    se_yield: np.ndarray
    origin_nm: tuple[float, float]
    pixel_size_nm: float


def _coverage(edges: np.ndarray, integral: np.ndarray, start: float, p: float, n: int, scale: float = 1.0):
    """Exact fraction of each of ``n`` pixels (from ``start``, pitch ``p``) covered by the
    intervals (times ``scale``); returns (first pixel, end pixel, fractions or None)."""
    e0, e1 = float(edges[0]), float(edges[-1])
    lo = max(0, math.floor((e0 - start) / p))
    hi = min(n, math.ceil((e1 - start) / p))
    if hi <= lo:
        return lo, hi, None
    if edges.size == 2:  # a single interval: only its two end pixels are partial
        cov = np.full(hi - lo, scale, np.float32)
        left, right = start + lo * p, start + hi * p
        first_end = min(left + p, e1)
        cov[0] = scale * (first_end - max(left, e0)) / p
        if hi - lo > 1:
            cov[-1] = scale * (min(right, e1) - max(right - p, e0)) / p
        return lo, hi, cov
    t = np.arange(lo, hi + 1) * p + start
    f = np.interp(t, edges, integral)
    return lo, hi, ((f[1:] - f[:-1]) * (scale / p)).astype(np.float32)


def rasterize(layout: Layout, *, origin_nm: tuple[float, float], shape: tuple[int, int],
              pixel_size_nm: float) -> SampleMaps:
    """Render height, reflectance and SE yield of a region with exact area anti-aliasing.

    Parameters
    ----------
    origin_nm : (x, y) chip nm of the top-left corner of pixel (0, 0).
    shape : (rows, cols).
    pixel_size_nm : sample nm per pixel. Regions partly off the layout show bare substrate.

    Overlapping features of different layers are composited lowest first (the upper one wins).
    """
    rows, cols = (int(shape[0]), int(shape[1]))
    if rows < 1 or cols < 1:
        raise SimParameterError(f"shape={shape!r} must have at least one row and one column")
    p = check_range("pixel_size_nm", pixel_size_nm, low=0.1, high=1e6, unit="nm")
    ox, oy = float(origin_nm[0]), float(origin_nm[1])
    layers = layout.layers
    height = np.full((rows, cols), layers[0].height_nm, np.float32)
    refl = np.full((rows, cols), layers[0].material.reflectance, np.float32)
    yld = np.full((rows, cols), layers[0].material.se_yield, np.float32)
    blocks = layout.blocks_in(ox, oy, ox + cols * p, oy + rows * p, pixel_size_nm=p)
    coverage = np.zeros((rows, cols), np.float32)
    i = 0
    while i < len(blocks):
        layer = blocks[i].layer
        r_lo, r_hi, c_lo, c_hi = rows, 0, cols, 0
        while i < len(blocks) and blocks[i].layer == layer:
            b = blocks[i]
            i += 1
            c0, c1, cx = _coverage(b.x_edges, b.x_integral, ox, p, cols, b.density)
            r0, r1, cy = _coverage(b.y_edges, b.y_integral, oy, p, rows)
            if cx is None or cy is None:
                continue
            np.maximum(coverage[r0:r1, c0:c1], np.outer(cy, cx), out=coverage[r0:r1, c0:c1])
            r_lo, r_hi, c_lo, c_hi = min(r_lo, r0), max(r_hi, r1), min(c_lo, c0), max(c_hi, c1)
        if r_hi <= r_lo:
            continue
        view = (slice(r_lo, r_hi), slice(c_lo, c_hi))
        cov = coverage[view]
        top = layers[layer]
        for image, value in ((height, top.height_nm), (refl, top.material.reflectance),
                             (yld, top.material.se_yield)):
            image[view] += (np.float32(value) - image[view]) * cov
        cov.fill(0.0)  # ready for the next layer
    return SampleMaps(height, refl, yld, (ox, oy), p)


def render_region(layout: Layout, *, region_nm: tuple[float, float, float, float],
                  pixel_size_nm: float) -> SampleMaps:
    """Render ``region_nm = (x0, y0, x1, y1)``, which must lie inside the layout's bounds."""
    x0, y0, x1, y1 = (float(v) for v in region_nm)
    bx0, by0, bx1, by1 = layout.bounds_nm
    if not (bx0 <= x0 < x1 <= bx1 and by0 <= y0 < y1 <= by1):
        raise SimParameterError(
            f"region_nm={region_nm!r} must lie inside the chip, x in [{bx0:g}, {bx1:g}] and "
            f"y in [{by0:g}, {by1:g}] nm, with x0 < x1 and y0 < y1")
    p = check_range("pixel_size_nm", pixel_size_nm, low=0.1, high=1e6, unit="nm")
    shape = (max(1, round((y1 - y0) / p)), max(1, round((x1 - x0) / p)))
    return rasterize(layout, origin_nm=(x0, y0), shape=shape, pixel_size_nm=p)


# ---------------------------------------------------------------- coarse overview

OVERVIEW_PIXEL_NM = 1_000.0  # renders at coarser pixels than this come from cached tiles
_TILE_PX = 64


@functools.lru_cache(maxsize=2048)
def _overview_tile(layout: Layout, tx: int, ty: int) -> SampleMaps:
    p = OVERVIEW_PIXEL_NM
    return rasterize(layout, origin_nm=(tx * _TILE_PX * p, ty * _TILE_PX * p), shape=(_TILE_PX, _TILE_PX),
                     pixel_size_nm=p)


def overview(layout: Layout, x0: float, y0: float, x1: float, y1: float) -> SampleMaps:
    """The region ``[x0, x1) × [y0, y1)`` (nm) at :data:`OVERVIEW_PIXEL_NM`, assembled from cached
    64 × 64 px tiles (exact area coverage), so out-of-focus surroundings cost a copy, not a render.
    The returned origin is the tile grid's, at or before (x0, y0)."""
    span = _TILE_PX * OVERVIEW_PIXEL_NM
    tx0, ty0 = math.floor(x0 / span), math.floor(y0 / span)
    tx1, ty1 = math.floor(x1 / span), math.floor(y1 / span)
    rows = [[_overview_tile(layout, tx, ty) for tx in range(tx0, tx1 + 1)] for ty in range(ty0, ty1 + 1)]
    maps = [np.block([[getattr(t, name) for t in row] for row in rows])
            for name in ("height_nm", "reflectance", "se_yield")]
    return SampleMaps(maps[0], maps[1], maps[2], (tx0 * span, ty0 * span), OVERVIEW_PIXEL_NM)
