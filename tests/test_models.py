import pytest
import torch

from taetlib.errors import ConfigError
from taetlib.models import MODELS, create_model


@pytest.mark.parametrize("name, size, channels", [
    ("small_cnn", 28, 1), ("small_cnn", 32, 3), ("resnet18", 32, 3), ("preact_resnet18", 32, 3),
    ("wrn_28_10", 32, 3), ("wrn_34_10", 32, 3),
])
def test_every_model_maps_pixels_to_logits(name, size, channels):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_channels=channels, mean=[0.5] * channels, std=[0.25] * channels).eval()
    x = torch.rand(2, channels, size, size, requires_grad=True)
    out = m(x)
    assert out.shape == (2, 7)
    out.sum().backward()  # attacks need the input gradient in pixel space
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_normalisation_lives_inside_the_model():
    m = create_model("small_cnn", 10, 1, mean=[0.3], std=[0.2])
    assert torch.allclose(m.mean.flatten(), torch.tensor([0.3])) and "mean" in m.state_dict()
    x = torch.rand(3, 1, 28, 28)
    m.eval()
    assert torch.allclose(m(x), m.net((x - 0.3) / 0.2))


def test_registry_and_errors():
    assert set(MODELS) == {"small_cnn", "resnet18", "preact_resnet18", "wrn_28_10", "wrn_34_10"}
    with pytest.raises(ConfigError, match="model='resnet19'"):
        create_model("resnet19", 10)
    with pytest.raises(ValueError, match="one value per channel"):
        create_model("small_cnn", 10, 3, mean=[0.5], std=[0.5])


def test_cifar_resnet_has_3x3_stem_and_no_maxpool():
    m = create_model("resnet18", 10, 3).net
    assert m.stem.kernel_size == (3, 3) and m.stem.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
