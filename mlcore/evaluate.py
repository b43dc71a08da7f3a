"""Evaluate a trained model on held-out pairs, side by side with baselines from the same run.

Methods: the model, the input itself (resampled to the target grid), unsharp masking, and
Richardson–Lucy deconvolution with a given PSF.  Scores: PSNR, SSIM, contextual similarity
and PSNR/SSIM after a ±``max_shift`` px best-shift search; per-pair difference maps on request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from mlcore.data import PairSet
from mlcore.errors import Cancelled
from mlcore.infer import TranslationModel, translate_mosaic
from mlcore.metrics import (
    best_shift_scores,
    contextual_score,
    difference_map,
    gaussian_psf,
    psnr,
    richardson_lucy,
    ssim,
    unsharp_mask,
)

__all__ = ["MethodScores", "EvaluationReport", "evaluate", "METHODS"]

METHODS = ("model", "input", "unsharp", "richardson_lucy")


@dataclass(frozen=True)
class MethodScores:
    """Means over the pairs of one method's scores ([0, 1] images, PSNR in dB)."""

    method: str
    psnr: float
    ssim: float
    cx: float
    psnr_shift: float
    ssim_shift: float


@dataclass(frozen=True)
class EvaluationReport:
    rows: tuple[MethodScores, ...]
    pairs: int
    max_shift: int
    difference_maps: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def row(self, method: str) -> MethodScores:
        return next(r for r in self.rows if r.method == method)

    def to_dict(self) -> dict:
        return {"pairs": self.pairs, "max_shift": self.max_shift,
                "rows": [asdict(r) for r in self.rows]}

    def table(self) -> str:
        head = (f"{'method':<16} {'PSNR dB':>8} {'SSIM':>7} {'CX':>7} "
                f"{'PSNR±' + str(self.max_shift):>8} {'SSIM±' + str(self.max_shift):>8}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.method:<16} {r.psnr:8.2f} {r.ssim:7.4f} {r.cx:7.4f} "
                         f"{r.psnr_shift:8.2f} {r.ssim_shift:8.4f}")
        return "\n".join(lines)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2
    if image.shape[:2] == shape:
        return image.astype(np.float32)
    interp = cv2.INTER_AREA if image.shape[0] > shape[0] else cv2.INTER_CUBIC
    return cv2.resize(image.astype(np.float32), (shape[1], shape[0]), interpolation=interp)


def evaluate(model: TranslationModel | None, pairs: PairSet, *, psf: np.ndarray | None = None,
             psf_sigma_px: float = 2.0, rl_iterations: int = 20, unsharp_sigma: float = 2.0,
             unsharp_amount: float = 1.0, max_shift: int = 2, tile: int = 512,
             keep_maps: bool = False, progress: Callable[[int, int], None] | None = None,
             should_cancel: Callable[[], bool] | None = None) -> EvaluationReport:
    """Score the model (if given) and the baselines on ``pairs``.

    Raw pairs are resized by ``data.crop / data.source_crop`` (the training pixel size) and
    normalised with the model's stored statistics; without a model, with percentiles of
    ``pairs`` themselves.  ``psf`` is in pixels of that grid (default Gaussian σ
    ``psf_sigma_px``).
    """
    from mlcore.data import fit_normalization

    if model is not None:
        norm_a, norm_b = model.norm_a, model.norm_b
        scale = model.config.data.crop / model.config.data.source_crop
    else:
        norm_a, norm_b, scale = fit_normalization(pairs.lr), fit_normalization(pairs.hr), 1.0
    psf = gaussian_psf(psf_sigma_px) if psf is None else psf
    methods = METHODS if model is not None else METHODS[1:]
    scores: dict[str, list[list[float]]] = {m: [] for m in methods}
    maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for i, (lr, hr) in enumerate(zip(pairs.lr, pairs.hr, strict=False)):
        if should_cancel and should_cancel():
            raise Cancelled(f"evaluation cancelled after {i} of {len(pairs.lr)} pairs")
        target_shape = (round(hr.shape[0] * scale), round(hr.shape[1] * scale))
        lr_raw = _resize(lr, (round(lr.shape[0] * scale), round(lr.shape[1] * scale)))
        target = norm_b.to_unit(_resize(hr, target_shape))
        inp = _resize(norm_a.to_unit(lr_raw), target_shape)
        outputs = {"input": inp,
                   "unsharp": unsharp_mask(inp, sigma=unsharp_sigma, amount=unsharp_amount),
                   "richardson_lucy": richardson_lucy(inp, psf, iterations=rl_iterations)}
        if model is not None:
            sem = translate_mosaic(model, lr_raw, tile=tile, risk=False, as_uint16=False).sem_like
            outputs["model"] = _resize(sem, target_shape)
        for method in methods:
            out = outputs[method]
            shifted = best_shift_scores(out, target, max_shift=max_shift)
            scores[method].append([psnr(out, target), ssim(out, target),
                                   contextual_score(out, target), shifted.psnr, shifted.ssim])
            if keep_maps:
                maps[method].append(difference_map(out, target))
        if progress:
            progress(i + 1, len(pairs.lr))
    rows = tuple(MethodScores(m, *np.mean(np.array(scores[m]), axis=0).tolist())
                 for m in methods)
    return EvaluationReport(rows, len(pairs.lr), max_shift, maps if keep_maps else {})
