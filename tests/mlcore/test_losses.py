import pytest
import torch

from mlcore.losses import ContextualLoss, LSGANLoss, SSIMLoss, contextual_similarity, ssim_torch


def test_lsgan_targets():
    loss = LSGANLoss()
    assert loss(torch.ones(2, 1, 3, 3), True) == 0
    assert loss(torch.zeros(2, 1, 3, 3), True) == 1
    assert loss(torch.full((1, 1, 2, 2), 0.5), False) == pytest.approx(0.25)


def _scene(seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, 1, 48, 48)
    for _ in range(6):
        r, c, h, w = torch.randint(0, 36, (4,), generator=g).tolist()
        img[..., r:r + 3 + h % 9, c:c + 3 + w % 9] = 1
    texture = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(seed + 99)) * 0.2
    return img * 1.6 - 0.8 + texture  # a fixed texture keeps patches distinct, as in real images


def test_contextual_loss_tolerates_shifts_but_not_other_content():
    cx = ContextualLoss(patch=5, stride=2, max_points=4096)
    a = _scene(0)
    same = cx(a, a, generator=torch.Generator().manual_seed(0))
    shifted = cx(torch.roll(a, (4, 2), (2, 3)), a, generator=torch.Generator().manual_seed(0))
    other = cx(_scene(1), a, generator=torch.Generator().manual_seed(0))
    assert same < 0.05
    assert shifted < other
    assert shifted < 0.5 * other


def test_contextual_similarity_identity_is_one_and_points_are_bounded():
    x = torch.randn(2, 8, 50)
    assert torch.allclose(contextual_similarity(x, x, band_width=0.1), torch.ones(2), atol=1e-3)
    cx = ContextualLoss(max_points=16)
    feats = [torch.randn(1, 4, 30, 30, requires_grad=True)]
    loss = cx(None, None, output_feats=feats, target_feats=[torch.randn(1, 4, 30, 30)])
    loss.backward()
    assert (feats[0].grad != 0).sum() <= 16 * 4  # only the sampled points carry gradient
    with pytest.raises(ValueError):
        cx(None, None)


def test_ssim_loss():
    a = _scene(0)
    assert SSIMLoss()(a, a) == pytest.approx(0, abs=1e-5)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    assert 0.1 < SSIMLoss()(a + 0.1 * noise, a) < SSIMLoss()(a + 0.5 * noise, a)


def test_similarities_stay_fp32_under_autocast():
    # AMP runs bmm and conv2d in half precision whatever their inputs are; these statistics
    # (1 − cos of near neighbours, E[x²] − μ²) would drift.  bf16 autocast on the CPU takes the
    # same path as fp16 AMP on CUDA.
    a = _scene(0)
    b = a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    cx = ContextualLoss(patch=5, stride=2, max_points=512)
    x, y = cx.patches(b), cx.patches(a)
    plain = contextual_similarity(x, y), ssim_torch(b, a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = contextual_similarity(x, y), ssim_torch(b, a)
    for p, m in zip(plain, mixed, strict=True):
        assert m.dtype == torch.float32
        assert torch.allclose(p, m, rtol=0, atol=1e-6), (p, m)
