"""Networks: the multi-residual-block generator, the 70×70 PatchGAN, and the junyanz peer.

Read top to bottom: small blocks, then the generator, the discriminator, the reference
ResNet-9, the factories, and the receptive-field probe that the tiled inference derives its
halo from.  Tensors are ``(B, C, H, W)`` float32 in [-1, 1].
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from mlcore.config import DiscriminatorConfig, GeneratorConfig
from mlcore.errors import ConfigError, InputImageError

__all__ = [
    "Generator",
    "InferenceGenerator",
    "fuse_for_inference",
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


def _fold_bn(conv: nn.Conv2d, norm: nn.Module, *, padding: str) -> nn.Conv2d:
    """``conv`` followed by eval-mode ``norm`` (BatchNorm or Identity) as one conv."""
    weight = conv.weight.detach().clone()
    bias = (conv.bias.detach().clone() if conv.bias is not None
            else torch.zeros(conv.out_channels, dtype=weight.dtype, device=weight.device))
    if isinstance(norm, nn.BatchNorm2d):
        scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = (bias - norm.running_mean) * scale + norm.bias.detach()
    elif not isinstance(norm, nn.Identity):
        raise ConfigError(f"cannot fold {type(norm).__name__} into a conv (not per-pixel)")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, padding_mode=padding, bias=True)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused.to(conv.weight.device)


def _phase_major(conv: nn.Conv2d, scale: int = 2) -> nn.Conv2d:
    """Reorder the output channels of a conv feeding ``PixelShuffle`` from (c, i, j) to
    (i, j, c), so that in channels_last memory the shuffle moves whole feature vectors."""
    with torch.no_grad():
        n = conv.out_channels // (scale * scale)
        conv.weight.copy_(conv.weight.view(n, scale * scale, *conv.weight.shape[1:])
                          .transpose(0, 1).reshape(conv.weight.shape))
        conv.bias.copy_(conv.bias.view(n, scale * scale).t().reshape(-1))
    return conv


def _shuffle_phase_major(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """``PixelShuffle`` of a (B, (i, j, c), H, W) tensor from :func:`_phase_major`, returned
    channels_last: (B, c, H·s, W·s)."""
    b, cs, h, w = x.shape
    c = cs // (scale * scale)
    y = x.permute(0, 2, 3, 1).reshape(b, h, w, scale, scale, c).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * scale, w * scale, c).permute(0, 3, 1, 2)


def _split(seq: nn.Sequential) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, the norm right after it or Identity) pairs of a generator stage."""
    mods, pairs = list(seq), []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            norm = nxt if isinstance(nxt, (nn.BatchNorm2d, nn.InstanceNorm2d)) else nn.Identity()
            pairs.append((m, norm))
    return pairs


class InferenceGenerator(nn.Module):
    """Eval-only form of :class:`Generator`: the same function with less memory traffic.

    BatchNorm is folded into the convs, activations run in place (LeakyReLU before each
    PixelShuffle, which it commutes with; the shuffle moves whole channels_last feature
    vectors, its conv's channels reordered to suit), and the 7×7 one-channel head is a matmul to one
    plane per tap plus a strided sum (a conv with 1 output channel uses a few % of the
    CPU's FLOP rate).  ``padding="reflect"`` matches the network everywhere;
    ``padding="zeros"`` lets the convs pad for free (the head leaves its rim at 0) and differs
    only within the receptive field radius of the border, i.e. only in the halo that tiled
    inference throws away.
    """

    stride = 4

    def __init__(self, net: Generator, *, padding: str = "zeros") -> None:
        super().__init__()
        if padding not in ("zeros", "reflect"):
            raise ConfigError(f"padding={padding!r} is unknown; allowed: 'zeros', 'reflect'")
        self.config, self.padding, self.slope = net.config, padding, net.config.leaky_slope
        fold = [_fold_bn(c, n, padding=padding) for c, n in
                _split(net.down) + _split(net.shallow)]
        self.down = nn.ModuleList(fold)  # two stride-2 convs and the shallow conv
        self.blocks = nn.ModuleList(
            nn.ModuleList(_fold_bn(c, n, padding=padding) for c, n in _split(b.body))
            for b in net.blocks)
        self.fuse = _fold_bn(*_split(net.fuse)[0], padding=padding)
        self.up = nn.ModuleList(_phase_major(_fold_bn(c, n, padding=padding))
                                for c, n in _split(net.up))
        head = _split(net.head)[0][0]
        k = head.kernel_size[0]
        self.head_k, self.out_channels = k, head.out_channels
        # Narrow features make the per-tap planes memory-bound: keep the conv there.
        self.head_conv = _fold_bn(head, nn.Identity(), padding=padding) if head.in_channels < 16 \
            else None
        # (C_out·k·k, f): row (o, dy, dx) is the kernel tap applied to every pixel's features.
        self.register_buffer("head_taps", head.weight.detach().permute(0, 2, 3, 1).reshape(
            -1, head.in_channels).clone())
        self.register_buffer("head_bias", head.bias.detach().clone())

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_conv is not None:
            return self.head_conv(x)
        k, r = self.head_k, self.head_k // 2
        if self.padding == "reflect":
            x = F.pad(x, (r, r, r, r), mode="reflect")
        b, c, hp, wp = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # (B·Hp·Wp, f), a view when channels_last
        planes = torch.mm(self.head_taps.to(rows.dtype), rows.t())  # (C_out·k², B·Hp·Wp)
        o, h, w, s = self.out_channels, hp - 2 * r, wp - 2 * r, b * hp * wp
        # Valid part only: out[o, b, y, x] = Σ_dy Σ_dx planes[(o, dy, dx), b, y + dy, x + dx],
        # summed along dx then dy through strided views (a strided k²-sum is 10× slower).
        rows_dx = planes.as_strided((o, k, k, b, hp, w), (k * k * s, k * s, s + 1, hp * wp, wp, 1)
                                    ).sum(2)  # (C_out, k, B, Hp, W)
        out = rows_dx.as_strided((o, k, b, h, w), (k * b * hp * w, b * hp * w + w, hp * w, w, 1)
                                 ).sum(1) + self.head_bias.to(planes.dtype).view(-1, 1, 1, 1)
        out = out.permute(1, 0, 2, 3)  # (B, C_out, H, W)
        # Zero mode: the r-px rim (inside the halo) is left at 0 rather than padding k² planes.
        return out if self.padding == "reflect" else F.pad(out, (r, r, r, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels, self.stride)
        a = self.slope
        for conv in self.down:
            x = F.leaky_relu_(conv(x), a)
        shallow = x  # (B, f, H/4, W/4)
        for c1, c2 in self.blocks:
            x = c2(F.leaky_relu_(c1(x), a)).add_(x)
        deep = self.fuse(x).add_(shallow)  # (B, f, H/4, W/4)
        rows, m = deep.shape[-2], self.band_margin
        if rows <= self.band_rows + 2 * m:
            return torch.tanh_(self._up_and_head(deep))
        # The full-resolution stages dominate memory (f channels at H × W): run them in bands
        # of rows with m quarter-resolution rows of overlap, so large tiles stay affordable.
        bands = []
        for q0 in range(0, rows, self.band_rows):
            q1 = min(q0 + self.band_rows, rows)
            a0, a1 = max(q0 - m, 0), min(q1 + m, rows)
            y = self._up_and_head(deep[:, :, a0:a1])
            bands.append(y[:, :, 4 * (q0 - a0):4 * (q1 - a0)])
        return torch.tanh_(torch.cat(bands, dim=2))

    # Quarter-resolution rows per band of the up path, and their overlap: each up conv spoils
    # one row at a band edge (2 full-res rows after the first shuffle, 6 after the second)
    # and the 7×7 head three more, 9 full-res rows < 3 × 4.
    band_rows, band_margin = 64, 3

    def _up_and_head(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.up:
            x = _shuffle_phase_major(F.leaky_relu_(conv(x), self.slope))  # (B, f, 2H', 2W')
        return self._head(x)


def fuse_for_inference(net: nn.Module, *, padding: str = "zeros") -> nn.Module | None:
    """:class:`InferenceGenerator` of an eval-mode :class:`Generator` with BatchNorm or no
    norm; None for other networks (InstanceNorm is global, nothing to fold)."""
    if not isinstance(net, Generator) or net.config.norm not in ("batch", "none"):
        return None
    return InferenceGenerator(net, padding=padding).eval().to(
        memory_format=torch.channels_last)


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
    probe = copy.deepcopy(net).cpu().double().eval()  # geometry only: the CPU will do
    for m in probe.modules():
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
