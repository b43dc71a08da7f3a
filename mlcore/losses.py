"""Loss modules: LSGAN, L1 cycle/identity, contextual loss (Mechrez et al. 2018), SSIM.

All take ``(B, C, H, W)`` float tensors in [-1, 1] (images) or logits (discriminator outputs)
and return a scalar tensor.  Nothing here downloads weights: the contextual loss runs on raw
image patches or on the model's own discriminator features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LSGANLoss",
    "ContextualLoss",
    "contextual_similarity",
    "SSIMLoss",
    "ssim_torch",
    "full_precision",
]


class LSGANLoss(nn.Module):
    """Least-squares GAN: mean (D(x) − target)², target 1 for real and 0 for fake."""

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.mse_loss(logits.float(), target.float())


def full_precision(t: torch.Tensor):
    """Suspends autocast for a statistic that fp16/bf16 would ruin: 1 − cos of near neighbours
    (fp16 steps 5e-4 near 1) and SSIM's E[x²] − μ² (cancellation).  AMP would otherwise run the
    bmm and convs inside in half precision whatever dtype their inputs have."""
    return torch.autocast(t.device.type, enabled=False)


def _sample_points(feats: torch.Tensor, n: int, generator: torch.Generator | None,
                   idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, D, N) → (B, D, min(N, n)) by random columns (same indices for the batch); returns
    the indices so a same-sized partner can be sampled at the same positions."""
    total = feats.shape[-1]
    if total <= n:
        return feats, None
    if idx is None:
        idx = torch.randperm(total, generator=generator, device="cpu")[:n]
    return feats[..., idx.to(feats.device)], idx


def sample_pair(x: torch.Tensor, y: torch.Tensor, n: int, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded point sets of ``x`` and ``y``; equal-sized sets share sample positions, so an
    image compared with itself scores CX = 1 instead of a sampling-noise value."""
    xs, idx = _sample_points(x, n, generator)
    ys, _ = _sample_points(y, n, generator, idx if x.shape[-1] == y.shape[-1] else None)
    return xs, ys


def contextual_similarity(x_feats: torch.Tensor, y_feats: torch.Tensor, *,
                          band_width: float = 0.5, eps: float = 1e-5) -> torch.Tensor:
    """CX(X, Y) per batch item for point sets ``(B, D, N)`` and ``(B, D, M)`` → ``(B,)``.

    d_ij = 1 − cos(x_i − μ_y, y_j − μ_y); d̃_ij = d_ij / (min_k d_ik + eps);
    CX_ij = softmax_j((1 − d̃_ij)/h); CX = mean_j max_i CX_ij.  Positions are ignored, which is
    what makes it tolerant of misaligned pairs.  Always fp32, also under AMP (see
    :func:`full_precision`).
    """
    with full_precision(x_feats):
        x = x_feats.float()
        y = y_feats.float()
        mu = y.mean(dim=2, keepdim=True)
        x = F.normalize(x - mu, dim=1)
        y = F.normalize(y - mu, dim=1)
        dist = 1.0 - torch.bmm(x.transpose(1, 2), y)  # (B, N, M)
        dist = dist.clamp_min(0.0)
        rel = dist / (dist.min(dim=2, keepdim=True).values + eps)
        cx = torch.softmax((1.0 - rel) / band_width, dim=2)  # normalised over j for each i
        return cx.max(dim=1).values.mean(dim=1)  # (B,)


class ContextualLoss(nn.Module):
    """−log CX between a generated image and a roughly aligned target.

    ``mode='patches'`` uses raw ``patch × patch`` patches (CoBi-RGB style, patch mean removed so
    it compares structure, not brightness); ``features`` passed to :meth:`forward` (lists of
    ``(B, C, h, w)``) are used as well/instead.  At most ``max_points`` points per image are
    sampled, bounding the N×M matrix (1024² fp32 = 4 MB per image).
    """

    def __init__(self, *, patch: int = 5, stride: int = 2, max_points: int = 1024,
                 band_width: float = 0.5) -> None:
        super().__init__()
        if patch < 1 or stride < 1 or max_points < 1 or band_width <= 0:
            raise ValueError("ContextualLoss: patch, stride, max_points >= 1 and band_width > 0")
        self.patch, self.stride = patch, stride
        self.max_points, self.band_width = max_points, band_width

    def patches(self, img: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(img.float(), self.patch, stride=self.stride)  # (B, C·p², L)
        return cols - cols.mean(dim=1, keepdim=True)

    def _term(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None
              ) -> torch.Tensor:
        x, y = sample_pair(x, y, self.max_points, gen)
        cx = contextual_similarity(x, y, band_width=self.band_width)
        return -torch.log(cx + 1e-5).mean()

    def forward(self, output: torch.Tensor | None, target: torch.Tensor | None, *,
                output_feats: list[torch.Tensor] | None = None,
                target_feats: list[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        terms = []
        if output is not None and target is not None:
            terms.append(self._term(self.patches(output), self.patches(target), generator))
        for fx, fy in zip(output_feats or [], target_feats or [], strict=False):
            terms.append(self._term(fx.flatten(2), fy.flatten(2), generator))
        if not terms:
            raise ValueError("ContextualLoss needs images or feature lists")
        return torch.stack(terms).mean()


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_torch(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 2.0,
               window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, Gaussian 11×11, σ 1.5) of ``(B, C, H, W)`` tensors.

    ``data_range`` is 2 for [-1, 1] images (1 for [0, 1]); the window shrinks on tiny images.
    Always fp32, also under AMP.
    """
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(window, sigma, c, x.device, torch.float32)
    with full_precision(x):
        x, y = x.float(), y.float()
        c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
        mu_x = F.conv2d(x, w, groups=c)
        mu_y = F.conv2d(y, w, groups=c)
        sxx = F.conv2d(x * x, w, groups=c) - mu_x ** 2
        syy = F.conv2d(y * y, w, groups=c) - mu_y ** 2
        sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
        den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
        return (num / den).mean()


class SSIMLoss(nn.Module):
    """1 − SSIM for [-1, 1] images (the optional paired term for well-registered pairs)."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim_torch(output, target, data_range=2.0)
