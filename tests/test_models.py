import pytest
import torch

from reuse.study.training.models import ARCHITECTURES, build_model, conv_layer_names, head_layer


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_shapes_and_forward_order(arch, depth):
    model = build_model(arch, "segmentation", 1, 6, width=4, depth=depth)
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 6, 32, 32)
    # registration order is the forward order, so the cheap listing is right
    assert conv_layer_names(model) == conv_layer_names(model, x)


def test_unet_has_skips_and_plain_not():
    unet = build_model("unet", "autoencoder", 1, 1, 4, 2)
    plain = build_model("plain", "autoencoder", 1, 1, 4, 2)
    assert conv_layer_names(unet) == conv_layer_names(plain)
    assert unet.up[0].conv[0][0].in_channels == 2 * plain.up[0].conv[0][0].in_channels


def test_pspnet_pyramid_bins():
    model = build_model("pspnet", "segmentation", 1, 3, 4, 2)
    assert model.ppm.bins == (1, 2, 3, 6)
    assert sum(1 for n in conv_layer_names(model) if n.startswith("ppm.")) == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="architecture='resnet'"):
        build_model("resnet", "segmentation", 1, 2)
    with pytest.raises(ValueError, match="task='cls'"):
        build_model("unet", "cls", 1, 2)
    with pytest.raises(ValueError, match="width=0"):
        build_model("unet", "segmentation", 1, 2, width=0)


def test_hook_order_for_any_cnn():
    class Odd(torch.nn.Module):  # registered b then a, run a then b
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Conv2d(2, 2, 1)
            self.a = torch.nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return self.b(self.a(x))

    assert conv_layer_names(Odd()) == ["b", "a"]
    assert conv_layer_names(Odd(), torch.zeros(1, 1, 4, 4)) == ["a", "b"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_convs_feeding_batchnorm_have_no_bias_and_the_head_is_last(arch):
    model = build_model(arch, "segmentation", 1, 6, width=4, depth=2)
    modules = dict(model.named_modules())
    for name in conv_layer_names(model):
        parent = modules[name.rsplit(".", 1)[0]] if "." in name else model
        siblings = list(parent.children()) if isinstance(parent, torch.nn.Sequential) else []
        idx = next((i for i, m in enumerate(siblings) if m is modules[name]), None)
        feeds_bn = idx is not None and idx + 1 < len(siblings) and isinstance(
            siblings[idx + 1], torch.nn.BatchNorm2d)
        assert (modules[name].bias is None) == feeds_bn, name
    assert head_layer(model) == conv_layer_names(model)[-1] == ("classifier" if arch == "pspnet" else "head")
    with pytest.raises(ValueError, match="no Conv2d"):
        head_layer(torch.nn.Linear(2, 2))


def test_onet_is_a_classifier_of_48_px_rgb():
    """MTCNN's ONet, as notebook 07 trains it: built by name, logits of n classes, names of
    facenet-pytorch's module (so its pretrained state loads by name)."""
    model = build_model("onet", "classification", 3, 10)
    assert model(torch.zeros(3, 3, 48, 48)).shape == (3, 10)
    assert conv_layer_names(model) == ["conv1", "conv2", "conv3", "conv4"]
    assert model.dense6_1.out_features == 10
    with pytest.raises(ValueError, match="n_classes"):
        build_model("onet", "classification", 3, 1)
    with pytest.raises(ValueError, match="in_channels=1"):
        build_model("onet", "classification", 1, 2)
