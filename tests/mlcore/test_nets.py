import pytest
import torch

from mlcore.config import DiscriminatorConfig, GeneratorConfig
from mlcore.errors import ConfigError, InputImageError
from mlcore.nets import (
    Discriminator,
    build_discriminator,
    build_generator,
    count_parameters,
    fuse_for_inference,
    halo_for,
    receptive_field,
)


def test_generator_shapes_and_range():
    g = build_generator(GeneratorConfig(features=8, blocks=2)).eval()
    y = g(torch.randn(2, 1, 40, 56) * 3)
    assert y.shape == (2, 1, 40, 56)
    assert y.abs().max() <= 1.0


def test_rgb_generator():
    g = build_generator(GeneratorConfig(in_channels=3, out_channels=3, features=8, blocks=1))
    assert g(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_paper_generator_parameter_count():
    # down 2×(3×3 conv + BN), shallow conv, 9 blocks × 2 (3×3 conv 64 + BN), fuse conv + BN,
    # 2 × (conv 64→256 + PixelShuffle), 7×7 head: the "about 1 M" of the paper.
    assert count_parameters(build_generator(GeneratorConfig())) == 1_076_033


def test_reference_peer_parameter_counts():
    peer = build_generator(GeneratorConfig(arch="junyanz_resnet9", norm="instance"))
    assert count_parameters(peer) == 11_365_633  # junyanz resnet_9blocks at 1 channel
    assert count_parameters(build_discriminator(DiscriminatorConfig())) == 2_762_689


def test_patchgan_receptive_field_is_70():
    d = build_discriminator(DiscriminatorConfig())
    assert receptive_field(d).size == 70
    assert d(torch.randn(1, 1, 256, 256)).shape == (1, 1, 30, 30)


def test_patchgan_family_receptive_fields():
    sizes = [receptive_field(build_discriminator(DiscriminatorConfig(features=4, layers=n))).size
             for n in (1, 2)]
    assert sizes == [16, 34]


def test_generator_receptive_field_and_halo_are_computed():
    g = build_generator(GeneratorConfig())
    rf = receptive_field(g)
    # Analytic check of the probe: per side, 3×3 convs at 1/4 res (shallow + 18 block + fuse +
    # first up conv = 21) give 4·21 px; down convs, 2nd up conv (1/2 res) and 7×7 head add the rest.
    assert 180 <= rf.size <= 190 and rf.radius == 95
    assert halo_for(g, rf=rf) == 96
    tiny = build_generator(GeneratorConfig(features=8, blocks=2))
    assert receptive_field(tiny).radius < rf.radius  # it depends on the network


def test_icnr_subkernels_start_identical():
    g = build_generator(GeneratorConfig(features=8, blocks=1))
    w = g.up[0].weight  # (4·8, 8, 3, 3) feeding PixelShuffle(2)
    groups = w.view(8, 4, *w.shape[1:])
    assert torch.equal(groups, groups[:, :1].expand_as(groups))


def test_factory_and_input_errors():
    with pytest.raises(ConfigError):
        GeneratorConfig(arch="unet")
    g = build_generator(GeneratorConfig(features=8, blocks=1))
    with pytest.raises(InputImageError, match="channel"):
        g(torch.randn(1, 3, 32, 32))
    with pytest.raises(InputImageError, match="multiples of 4"):
        g(torch.randn(1, 1, 30, 32))
    assert isinstance(build_discriminator(DiscriminatorConfig()), Discriminator)


def _calibrated(cfg: GeneratorConfig) -> torch.nn.Module:
    """A generator whose BatchNorms hold non-trivial running statistics (eval mode)."""
    torch.manual_seed(0)
    g = build_generator(cfg)
    g.train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(2, cfg.in_channels, 32, 32) * 0.7 + 0.3)
    return g.eval()


@pytest.mark.parametrize("cfg", [
    GeneratorConfig(),  # the paper's 64 features × 9 blocks
    GeneratorConfig(features=8, blocks=2, dropout=0.5, in_channels=3, out_channels=3),
    GeneratorConfig(features=8, blocks=1, norm="none"),
])
def test_inference_form_equals_the_network(cfg):
    g = _calibrated(cfg)
    halo = halo_for(g)
    x = torch.randn(2, cfg.in_channels, 2 * halo + 24, 2 * halo + 16)
    with torch.inference_mode():
        ref = g(x)
        same = fuse_for_inference(g, padding="reflect")(x)
        zeros = fuse_for_inference(g)(x.contiguous(memory_format=torch.channels_last))
        for padding, whole in (("reflect", same), ("zeros", zeros)):
            banded = fuse_for_inference(g, padding=padding)
            banded.band_rows = 5  # the up path in overlapping bands of rows, as on large tiles
            assert (banded(x) - whole).abs().max() < 1e-5
    assert same.shape == ref.shape and (same - ref).abs().max() < 1e-4
    interior = (..., slice(halo, -halo), slice(halo, -halo))  # what tiled inference keeps
    inside = (zeros[interior] - ref[interior]).abs().max()
    assert inside < 1e-4
    assert (zeros - ref).abs().max() > 10 * inside  # the border does differ: the padding is real


def test_inference_form_needs_a_foldable_norm():
    assert fuse_for_inference(build_generator(GeneratorConfig(features=8, norm="instance"))) is None
    peer = build_generator(GeneratorConfig(arch="junyanz_resnet9", features=8, blocks=1))
    assert fuse_for_inference(peer) is None
