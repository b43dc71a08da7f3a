"""Configuration of the CycleGAN: one frozen dataclass per concern, one root that holds them.

Every number the networks, losses, data pipeline and training loop use is a field here, so a
checkpoint that stores ``ExperimentConfig.to_dict()`` rebuilds the run exactly.  Validation
happens in ``__post_init__``: a bad value raises :class:`~mlcore.errors.ConfigError` naming the
field and its allowed range.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from mlcore.errors import ConfigError

__all__ = [
    "GeneratorConfig",
    "DiscriminatorConfig",
    "LossConfig",
    "DataConfig",
    "TrainConfig",
    "ExperimentConfig",
    "preset",
]

NORMS = ("batch", "instance", "none")
GENERATOR_ARCHS = ("ssum_resnet", "junyanz_resnet9")


def _check(cond: bool, name: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is out of range; allowed: {allowed}")


def _check_channels(name: str, value: int) -> None:
    _check(value in (1, 3), name, "1 (grey microscopy) or 3 (RGB)", value)


@dataclass(frozen=True)
class GeneratorConfig:
    """The multi-residual-block generator (see :class:`mlcore.nets.Generator`).

    ``arch='junyanz_resnet9'`` builds the reference CycleGAN ResNet-9 (256-channel blocks,
    instance norm) used as the benchmark peer; it ignores ``blocks``/``dropout``'s defaults
    only in that its block width is ``4 * features``.
    """

    arch: str = "ssum_resnet"
    in_channels: int = 1
    out_channels: int = 1
    features: int = 64
    blocks: int = 9
    dropout: float = 0.0
    norm: str = "batch"
    leaky_slope: float = 0.2

    def __post_init__(self) -> None:
        _check(self.arch in GENERATOR_ARCHS, "generator.arch", str(GENERATOR_ARCHS), self.arch)
        _check_channels("generator.in_channels", self.in_channels)
        _check_channels("generator.out_channels", self.out_channels)
        _check(1 <= self.features <= 1024, "generator.features", "1..1024", self.features)
        _check(0 <= self.blocks <= 64, "generator.blocks", "0..64", self.blocks)
        _check(0.0 <= self.dropout < 1.0, "generator.dropout", "[0, 1)", self.dropout)
        _check(self.norm in NORMS, "generator.norm", str(NORMS), self.norm)
        _check(0.0 <= self.leaky_slope < 1.0, "generator.leaky_slope", "[0, 1)", self.leaky_slope)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The PatchGAN; ``layers=3`` with ``features=64`` is the 70×70 PatchGAN."""

    in_channels: int = 1
    features: int = 64
    layers: int = 3
    norm: str = "instance"

    def __post_init__(self) -> None:
        _check_channels("discriminator.in_channels", self.in_channels)
        _check(1 <= self.features <= 1024, "discriminator.features", "1..1024", self.features)
        _check(1 <= self.layers <= 6, "discriminator.layers", "1..6", self.layers)
        _check(self.norm in NORMS, "discriminator.norm", str(NORMS), self.norm)


@dataclass(frozen=True)
class LossConfig:
    """Weights of every loss term; the identity weight is ``identity * cycle`` as in CycleGAN."""

    adversarial: float = 1.0
    cycle: float = 10.0
    identity: float = 0.5
    contextual: float = 1.0
    contextual_on: str = "patches"  # 'patches' | 'disc' | 'both'
    contextual_patch: int = 5
    contextual_stride: int = 2
    contextual_points: int = 1024
    contextual_band_width: float = 0.5
    paired_l1: float = 0.0
    paired_ssim: float = 0.0

    def __post_init__(self) -> None:
        for name in ("adversarial", "cycle", "identity", "contextual", "paired_l1", "paired_ssim"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1e4, f"loss.{name}", "0..1e4", value)
        _check(self.contextual_on in ("patches", "disc", "both"), "loss.contextual_on",
               "'patches', 'disc' or 'both'", self.contextual_on)
        _check(1 <= self.contextual_patch <= 31, "loss.contextual_patch", "1..31",
               self.contextual_patch)
        _check(1 <= self.contextual_stride <= 31, "loss.contextual_stride", "1..31",
               self.contextual_stride)
        _check(16 <= self.contextual_points <= 65536, "loss.contextual_points", "16..65536",
               self.contextual_points)
        _check(0.0 < self.contextual_band_width <= 10.0, "loss.contextual_band_width",
               "(0, 10]", self.contextual_band_width)


@dataclass(frozen=True)
class DataConfig:
    """How pairs become training tensors.

    ``source_crop`` px crops (one physical pixel size) are resized to ``crop`` px; with the
    paper's 512 → 256 that is a 2× down-sampling.  ``percentiles`` fix the 16-bit → [0, 1]
    normalisation once per domain; the statistics travel inside the checkpoint.
    """

    crop: int = 256
    source_crop: int = 512
    percentiles: tuple[float, float] = (0.1, 99.9)
    unaligned: bool = True

    def __post_init__(self) -> None:
        _check(self.crop % 4 == 0 and 8 <= self.crop <= 4096, "data.crop",
               "a multiple of 4 in 8..4096", self.crop)
        _check(self.crop <= self.source_crop <= 16384, "data.source_crop",
               f"{self.crop}..16384", self.source_crop)
        lo, hi = self.percentiles
        _check(0.0 <= lo < hi <= 100.0, "data.percentiles", "0 <= low < high <= 100",
               self.percentiles)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule: Adam, constant lr for ``constant_steps`` then linear decay to 0."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    constant_steps: int = 100_000
    decay_steps: int = 100_000
    batch_size: int = 1
    pool_size: int = 50
    seed: int = 0
    amp: bool = True
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 0  # steps between sample images; 0 = once per epoch
    device: str = "auto"  # 'auto' | 'cpu' | 'cuda' | 'cuda:N'

    def __post_init__(self) -> None:
        _check(0.0 < self.lr <= 1.0, "train.lr", "(0, 1]", self.lr)
        b1, b2 = self.betas
        _check(0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0, "train.betas", "each in [0, 1)", self.betas)
        _check(self.constant_steps >= 0, "train.constant_steps", ">= 0", self.constant_steps)
        _check(self.decay_steps >= 0, "train.decay_steps", ">= 0", self.decay_steps)
        _check(self.total_steps >= 1, "train.constant_steps + decay_steps", ">= 1",
               self.total_steps)
        _check(1 <= self.batch_size <= 1024, "train.batch_size", "1..1024", self.batch_size)
        _check(0 <= self.pool_size <= 10_000, "train.pool_size", "0..10000", self.pool_size)
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", ">= 1",
               self.checkpoint_every)
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", ">= 1",
               self.keep_checkpoints)
        _check(self.sample_every >= 0, "train.sample_every", ">= 0", self.sample_every)
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               "train.device", "'auto', 'cpu', 'cuda' or 'cuda:N'", self.device)

    @property
    def total_steps(self) -> int:
        return self.constant_steps + self.decay_steps


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run needs besides its data; stored in every checkpoint."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        g, d = self.generator, self.discriminator
        if d.in_channels != g.out_channels:
            raise ConfigError(
                f"discriminator.in_channels={d.in_channels} must equal "
                f"generator.out_channels={g.out_channels}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentConfig:
        parts = {}
        for f in dataclasses.fields(cls):
            sub_cls = {"generator": GeneratorConfig, "discriminator": DiscriminatorConfig,
                       "loss": LossConfig, "data": DataConfig, "train": TrainConfig}[f.name]
            sub = dict(raw.get(f.name, {}))
            known = {sf.name for sf in dataclasses.fields(sub_cls)}
            unknown = set(sub) - known
            if unknown:
                raise ConfigError(f"unknown {f.name} fields: {sorted(unknown)}")
            for key, value in sub.items():
                if isinstance(value, list):  # JSON turns tuples into lists
                    sub[key] = tuple(value)
            parts[f.name] = sub_cls(**sub)
        return cls(**parts)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        return cls.from_dict(json.loads(text))

    def replace(self, **sections: Any) -> ExperimentConfig:
        """Copy with whole sections or ``section__field=value`` overrides replaced."""
        whole: dict[str, Any] = {}
        fields: dict[str, dict[str, Any]] = {}
        for key, value in sections.items():
            if "__" in key:
                section, name = key.split("__", 1)
                fields.setdefault(section, {})[name] = value
            else:
                whole[key] = value
        for section, changes in fields.items():  # all sections change before cross-checks run
            whole[section] = dataclasses.replace(whole.get(section, getattr(self, section)),
                                                 **changes)
        out = dataclasses.replace(self, **whole)
        return out


def preset(name: str, *, channels: int = 1) -> ExperimentConfig:
    """Named configurations: ``'paper'`` (the full model) or ``'tiny'`` (CPU tests, ~70 k params)."""
    if name == "paper":
        return ExperimentConfig(
            generator=GeneratorConfig(in_channels=channels, out_channels=channels),
            discriminator=DiscriminatorConfig(in_channels=channels),
        )
    if name == "tiny":
        return ExperimentConfig(
            generator=GeneratorConfig(in_channels=channels, out_channels=channels,
                                      features=8, blocks=2),
            discriminator=DiscriminatorConfig(in_channels=channels, features=8, layers=2),
            loss=LossConfig(contextual_points=256, contextual_patch=5, contextual_stride=2),
            data=DataConfig(crop=32, source_crop=32),
            train=TrainConfig(constant_steps=20, decay_steps=20, batch_size=2, pool_size=10,
                              amp=False, checkpoint_every=10, device="cpu"),
        )
    raise ConfigError(f"preset={name!r} is unknown; allowed: 'paper', 'tiny'")
