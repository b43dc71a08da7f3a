import pytest

from mlcore.config import ExperimentConfig, GeneratorConfig, LossConfig, TrainConfig, preset
from mlcore.errors import ConfigError


def test_paper_defaults_match_the_paper():
    cfg = preset("paper")
    assert (cfg.generator.blocks, cfg.generator.features, cfg.generator.norm) == (9, 64, "batch")
    assert (cfg.discriminator.features, cfg.discriminator.layers) == (64, 3)
    assert (cfg.loss.cycle, cfg.loss.identity) == (10.0, 0.5)
    assert (cfg.train.lr, cfg.train.betas, cfg.train.pool_size) == (2e-4, (0.5, 0.999), 50)
    assert (cfg.data.crop, cfg.data.source_crop) == (256, 512)


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_json_round_trip(name):
    cfg = preset(name).replace(loss__contextual_on="both", train__betas=(0.4, 0.99))
    assert ExperimentConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("make", [
    lambda: GeneratorConfig(norm="group"),
    lambda: GeneratorConfig(in_channels=2),
    lambda: GeneratorConfig(dropout=1.0),
    lambda: LossConfig(cycle=-1),
    lambda: LossConfig(contextual_on="vgg"),
    lambda: TrainConfig(constant_steps=0, decay_steps=0),
    lambda: TrainConfig(device="tpu"),
    lambda: preset("huge"),
])
def test_bad_values_name_the_field(make):
    with pytest.raises(ConfigError, match=r"=|preset"):
        make()


def test_unknown_json_field_is_refused():
    raw = preset("tiny").to_dict()
    raw["train"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match="learning_rate"):
        ExperimentConfig.from_dict(raw)
