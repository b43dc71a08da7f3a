"""The tiny CycleGAN the inference tests translate with: O(1) activations and non-trivial
BatchNorm statistics (eval mode), as after training, from a seed alone."""

import torch

from mlcore.config import preset
from mlcore.data import Normalization
from mlcore.infer import TranslationModel
from mlcore.nets import build_generator, halo_for
from mlcore.train import _mirror


def tiny_model(seed: int = 0, *, device: str = "cpu") -> TranslationModel:
    torch.manual_seed(seed)
    cfg = preset("tiny")
    g_ab, g_ba = build_generator(cfg.generator), build_generator(_mirror(cfg.generator))
    for g in (g_ab, g_ba):
        for m in g.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, a=0.2)
        g.train()
        with torch.no_grad():
            g(torch.randn(2, 1, 32, 32) * 0.5 + 0.2)
    return TranslationModel(g_ab, g_ba, config=cfg, norm_a=Normalization(0, 65535),
                            norm_b=Normalization(0, 65535), halo=halo_for(g_ab), device=device)
