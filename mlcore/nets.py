"""Networks: the multi-residual-block generator, the 70×70 PatchGAN, and the junyanz peer.

Read top to bottom: small blocks, then the generator, the discriminator, the reference
ResNet-9, the factories, and the receptive-field probe that the tiled inference derives its
halo from.  Tensors are ``(B, C, H, W)`` float32 in [-1, 1].
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from mlcore.config import DiscriminatorConfig, GeneratorConfig
from mlcore.errors import ConfigError, InputImageError

__all__ = [
    "Generator",
    "Discriminator",
    "ResnetGenerator9",
    "build_generator",
    "build_discriminator",
    "count_parameters",
    "receptive_field",
    "ReceptiveField",
    "halo_for",
    "total_stride",
]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm={kind!r} is unknown; allowed: 'batch', 'instance', 'none'")


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    # Reflect padding everywhere: zero padding makes tile borders (and mosaic edges) dark.
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode="reflect",
                     bias=bias)


def icnr_(weight: torch.Tensor, *, scale: int = 2, std: float = 0.02) -> None:
    """ICNR init (Aitken et al. 2017) of a conv feeding ``PixelShuffle(scale)``.

    Each output channel's ``scale²`` sub-pixel kernels start identical, so the shuffle starts
    as nearest-neighbour up-sampling and shows no checkerboard.
    """
    out_ch = weight.shape[0]
    if out_ch % (scale * scale):
        raise ConfigError(f"ICNR needs out channels divisible by {scale * scale}, got {out_ch}")
    sub = torch.randn(out_ch // (scale * scale), *weight.shape[1:]) * std
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))


class ResidualBlock(nn.Module):
    """x + [3×3 conv, norm, LeakyReLU, (dropout), 3×3 conv, norm]; no activation after the add."""

    def __init__(self, channels: int, *, norm: str, dropout: float, slope: float) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [
            _conv(channels, channels, 3, bias=bias), _norm(norm, channels),
            nn.LeakyReLU(slope, inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [_conv(channels, channels, 3, bias=bias), _norm(norm, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """SSUM ↔ SEM generator of the paper (≈1.08 M parameters at 64 features, 9 blocks, 1 ch).

    ``x (B, C_in, H, W)`` → ``(B, C_out, H, W)`` in [-1, 1]; H and W must be multiples of 4
    (the total stride of the two down-sampling convs).
    """

    stride = 4

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        f, norm, slope = cfg.features, cfg.norm, cfg.leaky_slope
        bias = norm != "batch"
        self.config = cfg
        self.down = nn.Sequential(  # two stride-2 convs: (B, f, H/4, W/4)
            _conv(cfg.in_channels, f, 3, stride=2, bias=bias), _norm(norm, f),
            nn.LeakyReLU(slope, inplace=True),
            _conv(f, f, 3, stride=2, bias=bias), _norm(norm, f), nn.LeakyReLU(slope, inplace=True),
        )
        self.shallow = nn.Sequential(_conv(f, f, 3), nn.LeakyReLU(slope, inplace=True))
        self.blocks = nn.Sequential(*[
            ResidualBlock(f, norm=norm, dropout=cfg.dropout, slope=slope)
            for _ in range(cfg.blocks)
        ])
        self.fuse = nn.Sequential(_conv(f, f, 3, bias=bias), _norm(norm, f))
        self.up = nn.Sequential(  # two sub-pixel ×2 layers: (B, f, H, W)
            _conv(f, 4 * f, 3), nn.PixelShuffle(2), nn.LeakyReLU(slope, inplace=True),
            _conv(f, 4 * f, 3), nn.PixelShuffle(2), nn.LeakyReLU(slope, inplace=True),
        )
        self.head = nn.Sequential(_conv(f, cfg.out_channels, 7), nn.Tanh())
        _init_weights(self)
        for m in self.up:
            if isinstance(m, nn.Conv2d):
                icnr_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels, self.stride)
        shallow = self.shallow(self.down(x))  # (B, f, H/4, W/4)
        deep = self.fuse(self.blocks(shallow)) + shallow  # long skip over the blocks
        return self.head(self.up(deep))  # (B, C_out, H, W)


class Discriminator(nn.Module):
    """PatchGAN: C64-C128-C256-C512 4×4 convs (stride 2,2,2,1), then a 1-channel 4×4 conv.

    ``x (B, C, H, W)`` → logits ``(B, 1, H', W')``; for 256² input and 3 layers H' = 30.
    ``features(x)`` returns the activations after each block (for contextual / matching loss).
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = cfg
        f = cfg.features
        blocks: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(cfg.in_channels, f, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True))]
        mult = 1
        for n in range(1, cfg.layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < cfg.layers else 1
            blocks.append(nn.Sequential(
                nn.Conv2d(f * prev, f * mult, 4, stride=stride, padding=1,
                          bias=cfg.norm != "batch"),
                _norm(cfg.norm, f * mult), nn.LeakyReLU(0.2, True)))
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(f * mult, 1, 4, stride=1, padding=1)
        _init_weights(self)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels, 1)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


class ResnetGenerator9(nn.Module):
    """The reference junyanz CycleGAN ``resnet_9blocks`` (ngf 64, 256-ch blocks, IN, ConvT).

    Used only as the benchmark peer: 11.37 M parameters at 1 channel.
    """

    stride = 4

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.config = cfg
        ngf, norm = cfg.features, cfg.norm
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(cfg.in_channels, ngf, 7, bias=bias),
            _norm(norm, ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       _norm(norm, ngf * mult * 2), nn.ReLU(True)]
        for _ in range(cfg.blocks):
            layers.append(_JunyanzBlock(ngf * 4, norm=norm, dropout=cfg.dropout))
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       _norm(norm, ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, cfg.out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels, self.stride)
        return self.model(x)


class _JunyanzBlock(nn.Module):
    def __init__(self, dim: int, *, norm: str, dropout: float) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias),
                                   _norm(norm, dim), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), _norm(norm, dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _init_weights(net: nn.Module) -> None:
    """CycleGAN init: conv weights N(0, 0.02), biases 0, BN weights N(1, 0.02)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check_input(x: torch.Tensor, channels: int, stride: int) -> None:
    if x.ndim != 4:
        raise InputImageError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise InputImageError(
            f"the network expects {channels} channel(s), the image has {x.shape[1]}")
    if x.shape[-2] % stride or x.shape[-1] % stride:
        raise InputImageError(
            f"height and width must be multiples of {stride}, got {tuple(x.shape[-2:])}")


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """Generator from its config; ``cfg.arch`` names the architecture."""
    if cfg.arch == "ssum_resnet":
        return Generator(cfg)
    if cfg.arch == "junyanz_resnet9":
        return ResnetGenerator9(cfg)
    raise ConfigError(f"generator.arch={cfg.arch!r} is unknown")


def build_discriminator(cfg: DiscriminatorConfig) -> Discriminator:
    return Discriminator(cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def total_stride(net: nn.Module) -> int:
    """Down-sampling factor inside a generator; tiles must be aligned to it."""
    return int(getattr(net, "stride", 1))


class ReceptiveField(tuple):
    """``(size, radius)``: full width in px, and the largest distance from an output pixel to an
    input pixel it depends on (max over the sub-pixel phases)."""

    @property
    def size(self) -> int:
        return self[0]

    @property
    def radius(self) -> int:
        return self[1]


@torch.no_grad()
def _positive_probe_copy(net: nn.Module) -> nn.Module:
    # A probe network with positive weights and no normalisation: every path carries a strictly
    # positive gradient, so the gradient's support is exactly the receptive field (random weights
    # could cancel or hit dead ReLUs).  Norms are per-pixel-affine in eval or global (IN), and a
    # global one would make the support the whole image, so they are removed.
    probe = copy.deepcopy(net).double().eval()
    for name, m in list(probe.named_modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.fill_(1.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.zero_()
    _replace_norms(probe)
    return probe


def _replace_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.SyncBatchNorm, nn.Tanh)):
            setattr(module, name, nn.Identity())  # tanh saturates; its support is pointwise
        else:
            _replace_norms(child)


def receptive_field(net: nn.Module, *, in_channels: int | None = None,
                    max_size: int = 4096) -> ReceptiveField:
    """Receptive field measured by a gradient probe along one image axis.

    A thin ``(1, C, 16, W)`` input passes through a positive-weight copy of ``net``; the
    gradient of one output pixel per sub-pixel phase marks the input columns it depends on.
    ``W`` doubles until the support no longer touches the probe's border.  Convolutions are
    square, so the result holds for rows too.
    """
    if in_channels is None:
        cfg = getattr(net, "config", None)
        in_channels = getattr(cfg, "in_channels", 1)
    stride = total_stride(net)
    probe = _positive_probe_copy(net)
    width = 64
    while width <= max_size:
        height = 16 if stride > 1 else width  # patch nets shrink too much for a thin probe
        x = torch.full((1, in_channels, height, width), 0.5, dtype=torch.float64, requires_grad=True)
        y = probe(x)
        scale = width // y.shape[-1] if y.shape[-1] < width else 1
        centre = (y.shape[-1] // 2) // stride * stride
        size, radius, touches = 0, 0, False
        for phase in range(stride if scale == 1 else 1):
            col = centre + phase
            grad, = torch.autograd.grad(y[0, 0, y.shape[-2] // 2, col], x, retain_graph=True)
            cols = torch.nonzero(grad.abs().sum(dim=(0, 1, 2)) > 0).flatten()
            lo, hi = int(cols.min()), int(cols.max())
            touches |= lo == 0 or hi == width - 1
            size = max(size, hi - lo + 1)
            if scale == 1:
                radius = max(radius, col - lo, hi - col)
            else:  # patch outputs: centre of the support is the natural anchor
                radius = max(radius, math.ceil((hi - lo) / 2))
        if not touches:
            return ReceptiveField((size, radius))
        width *= 2
    raise ValueError(f"receptive field exceeds max_size={max_size} px")


def halo_for(net: nn.Module, *, rf: ReceptiveField | None = None) -> int:
    """Tile halo: the receptive-field radius rounded up to the generator's total stride."""
    rf = rf or receptive_field(net)
    stride = total_stride(net)
    return int(math.ceil(rf.radius / stride) * stride)
