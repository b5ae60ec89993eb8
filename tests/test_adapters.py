"""Unit tests for finetune_helpers.adapters: BitFit / norm-only, LoRA by hand and merged, parity with peft, costs."""
import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from finetune_helpers.adapters import (LoRA, add_lora, lora_targets, merge_lora, peft_lora, saved_bytes,
                                       step_memory, task_state, train_only)
from finetune_helpers.freezing import count_params
from finetune_helpers.models import build_model, layer_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import tiny_net  # noqa: E402

EFFNET_TOP = ["blocks.5", "blocks.6", "conv_head"]


def trainable_names(model):
    """Names of the parameters that require grad."""
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def effnet():
    """An untrained EfficientNet-Lite0 with a 10-class head (fast, offline), in eval mode."""
    torch.manual_seed(0)
    return build_model(10, arch="efficientnet_lite0", pretrained=False).eval()


@pytest.fixture(scope="module")
def resnet():
    """An untrained ResNet-18 with a 7-class head, in eval mode."""
    torch.manual_seed(0)
    return build_model(7, arch="resnet18", pretrained=False).eval()


def images(n=2, size=32, seed=0):
    """A small batch of random images."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomise_lora(model, seed=1):
    """Give every LoRA B a random value, as if trained, so the update is not zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRA):
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=generator) * 0.05)
    return model


# ------------------------------------------------------------------ BitFit / norm-only

def test_bitfit_trains_every_bias_and_the_head_only():
    model = train_only(tiny_net(), "bias")
    assert trainable_names(model) == {"features.0.bias", "features.1.bias", "features.3.bias", "features.4.bias",
                                      "fc.weight", "fc.bias"}


def test_norm_only_trains_norm_affine_and_the_head_only():
    model = train_only(tiny_net(), "norm")
    assert trainable_names(model) == {"features.1.weight", "features.1.bias", "features.4.weight",
                                      "features.4.bias", "fc.weight", "fc.bias"}


def test_norm_only_knows_layer_and_group_norm():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.GroupNorm(2, 8))
    model.fc = nn.Linear(8, 2)
    assert trainable_names(train_only(model, "norm")) == {"1.weight", "1.bias", "3.weight", "3.bias",
                                                          "fc.weight", "fc.bias"}


def test_train_only_freezes_first_and_gradients_follow(resnet):
    model = copy.deepcopy(resnet)
    train_only(model, "norm")
    assert train_only(model, "bias") is model
    bn = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_params(model)[0] == bn + 7 * 512 + 7, "BitFit on ResNet-18: the BN biases (convs have none), fc"
    nn.functional.cross_entropy(model(images()), torch.tensor([0, 1])).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(model)


@pytest.mark.parametrize("which", ["biases", "", None, "all"])
def test_train_only_refuses_unknown_choices(which):
    with pytest.raises(ValueError, match="bias"):
        train_only(tiny_net(), which)


# ------------------------------------------------------------------ LoRA by hand

@pytest.mark.parametrize("base", [nn.Linear(12, 6), nn.Conv2d(12, 6, 1), nn.Conv2d(12, 6, 1, stride=2, bias=False)])
def test_lora_starts_as_the_pretrained_layer_and_trains_only_a_and_b(base):
    torch.manual_seed(0)
    x = torch.randn(3, 12) if isinstance(base, nn.Linear) else torch.randn(3, 12, 5, 5)
    before = base(x)
    lora = LoRA(base, r=2, alpha=4)
    assert torch.equal(lora(x), before), "B starts at zero: the wrapped layer is exactly the pretrained one"
    assert trainable_names(lora) == {"lora_A", "lora_B"}
    assert count_params(lora)[0] == 2 * (12 + 6)
    assert not torch.equal(lora.lora_A, torch.zeros_like(lora.lora_A)), "A starts random, or B never learns"


def test_lora_adds_alpha_over_r_times_b_at_a():
    torch.manual_seed(0)
    base, x = nn.Linear(5, 4), torch.randn(3, 5)
    lora = randomise_lora(LoRA(base, r=2, alpha=8))
    expected = base(x) + 4.0 * x @ (lora.lora_B @ lora.lora_A).T
    torch.testing.assert_close(lora(x), expected)


def test_lora_conv_uses_the_base_stride():
    torch.manual_seed(0)
    base, x = nn.Conv2d(4, 3, 1, stride=2), torch.randn(2, 4, 6, 6)
    lora = randomise_lora(LoRA(base, r=1))
    delta = (lora.lora_B @ lora.lora_A)[:, :, None, None]
    torch.testing.assert_close(lora(x), base(x) + nn.functional.conv2d(x, delta, stride=2))


@pytest.mark.parametrize("base", [nn.Linear(12, 6), nn.Conv2d(12, 6, 1, stride=2, bias=False)])
def test_merge_gives_a_plain_layer_with_the_same_outputs(base):
    torch.manual_seed(0)
    x = torch.randn(3, 12) if isinstance(base, nn.Linear) else torch.randn(3, 12, 5, 5)
    weight = base.weight.detach().clone()
    lora = randomise_lora(LoRA(base, r=3, alpha=6))
    merged = lora.merge()
    assert type(merged) is type(base)
    assert not torch.equal(merged.weight, weight), "the update must be folded into the weight"
    torch.testing.assert_close(merged(x), lora(x))
    assert torch.equal(lora.base.weight, weight), "merge returns a new layer; the wrapped one is unchanged"


@pytest.mark.parametrize("kwargs", [dict(r=0), dict(r=-2), dict(r=1.5), dict(r=True), dict(r=7),
                                    dict(r=2, alpha=0), dict(r=2, alpha=-1.0), dict(r=2, alpha="8")])
def test_lora_refuses_bad_rank_or_alpha(kwargs):
    with pytest.raises(ValueError, match="r=|alpha|rank"):
        LoRA(nn.Linear(6, 8), **kwargs)


@pytest.mark.parametrize("base", [nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 1, groups=4), nn.Conv1d(4, 4, 1),
                                  nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, padding=1, padding_mode="reflect")])
def test_lora_refuses_what_is_not_a_linear_or_1x1_conv(base):
    with pytest.raises(ValueError, match="1x1"):
        LoRA(base)


# ------------------------------------------------------------------ LoRA on a backbone

def test_add_lora_wraps_the_pointwise_convs_of_the_named_groups(effnet):
    model = add_lora(copy.deepcopy(effnet), EFFNET_TOP, r=4)
    wrapped = [m for m in model.modules() if isinstance(m, LoRA)]
    groups = dict(layer_groups(effnet))
    pointwise = [m for g in EFFNET_TOP for m in groups[g].modules()
                 if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    assert len(wrapped) == len(pointwise) == len(lora_targets(effnet, EFFNET_TOP)) > 3
    expected = sum(4 * (m.in_channels + m.out_channels) for m in pointwise) + 10 * 1280 + 10
    assert count_params(model)[0] == expected, "trainable: every A and B, and the head"
    x = images()
    assert torch.equal(model(x), effnet(x))


def test_add_lora_on_resnet18_finds_the_1x1_downsample_convs(resnet):
    assert lora_targets(resnet, ["layer2", "layer3", "layer4"]) == [
        "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        lora_targets(resnet, ["stem"])


@pytest.mark.parametrize("groups", [["classifier"], ["blocks.9"], "blocks.6", []])
def test_add_lora_refuses_the_head_and_unknown_groups(effnet, groups):
    with pytest.raises(ValueError, match="group"):
        add_lora(copy.deepcopy(effnet), groups)


def test_add_lora_twice_is_refused(effnet):
    model = add_lora(copy.deepcopy(effnet), ["conv_head"])
    with pytest.raises(ValueError, match="already"):
        add_lora(model, ["blocks.6"])


def test_merge_lora_restores_the_architecture_with_the_same_outputs(effnet):
    model = randomise_lora(add_lora(copy.deepcopy(effnet), EFFNET_TOP, r=4))
    x = images()
    adapted = model(x)
    assert not torch.allclose(adapted, effnet(x)), "a non-zero update changes the outputs"
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRA) for m in merged.modules())
    assert list(merged.state_dict()) == list(effnet.state_dict()), "same keys: loads into build_model"
    torch.testing.assert_close(merged(x), adapted, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ the same with peft

@pytest.mark.parametrize("arch, groups", [("efficientnet_lite0", EFFNET_TOP), ("resnet18", ["layer3", "layer4"])])
def test_peft_builds_the_same_lora(effnet, resnet, arch, groups):
    base = effnet if arch == "efficientnet_lite0" else resnet
    hand = add_lora(copy.deepcopy(base), groups, r=4, alpha=8)
    hf = peft_lora(copy.deepcopy(base), groups, r=4, alpha=8)
    assert count_params(hand)[0] == sum(p.numel() for p in hf.parameters() if p.requires_grad)
    x = images()
    assert torch.equal(hf(x), base(x)) and torch.equal(hand(x), base(x))
    randomise_lora(hand)  # copy the hand-written A and B into peft's layers: same math, same outputs
    hf_state = hf.state_dict()
    with torch.no_grad():
        for name, module in hand.named_modules():
            if isinstance(module, LoRA):
                prefix = f"base_model.model.{name}"
                hf_state[f"{prefix}.lora_A.default.weight"].copy_(module.lora_A.view_as(
                    hf_state[f"{prefix}.lora_A.default.weight"]))
                hf_state[f"{prefix}.lora_B.default.weight"].copy_(module.lora_B.view_as(
                    hf_state[f"{prefix}.lora_B.default.weight"]))
    torch.testing.assert_close(hf(x), hand(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(hand(x), base(x))


def test_peft_refuses_a_bad_rank(effnet):
    with pytest.raises(ValueError, match="rank"):
        peft_lora(copy.deepcopy(effnet), ["conv_head"], r=0)


# ------------------------------------------------------------------ what each strategy costs

class WideUnderSmallHead(nn.Module):
    """Large Linear layers (frozen by BitFit but for their biases) under a small head `fc`."""

    def __init__(self):
        super().__init__()
        self.stem, self.body, self.fc = nn.Linear(3 * 32 * 32, 512), nn.Linear(512, 4096), nn.Linear(4096, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.body(torch.relu(self.stem(x.flatten(1))))))


def test_task_state_holds_only_what_was_trained(effnet):
    lora = add_lora(copy.deepcopy(effnet), EFFNET_TOP, r=4)
    state = task_state(lora)
    assert set(state) == trainable_names(lora)
    assert all(k.endswith(("lora_A", "lora_B")) or k.startswith("classifier.") for k in state)
    full = saved_bytes(effnet.state_dict())
    weights = sum(t.numel() * t.element_size() for t in effnet.state_dict().values())
    assert weights <= full < weights * 1.1, "torch.save writes the tensors plus a little metadata"
    assert saved_bytes(state) < full / 10


def test_step_memory_counts_parameters_once_and_orders_the_strategies(effnet):
    x, y = images(4, 32), torch.tensor([0, 1, 2, 3])
    net = train_only(WideUnderSmallHead(), "bias")
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    trainable = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    used, how = step_memory(net, x, y)
    assert "parameters" in how
    assert params + 3 * trainable < used < params + 3 * trainable + 200_000, \
        "parameters once (autograd keeps body's weight for the backward pass too), gradients and two AdamW " \
        "moments of the trainable ones, a few small activations"
    head = train_only(copy.deepcopy(effnet), "bias")
    for p in head.parameters():
        p.requires_grad = False
    head.classifier.requires_grad_(True)
    costs = [step_memory(m, x, y)[0] for m in (head, add_lora(copy.deepcopy(effnet), ["conv_head"], r=4),
                                               copy.deepcopy(effnet).requires_grad_(True))]
    assert costs[0] < costs[1] < costs[2], f"head-only < LoRA on conv_head < full fine-tuning: {costs}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_memory_on_cuda_reads_the_allocator(effnet):
    x, y = images(4, 32).cuda(), torch.tensor([0, 1, 2, 3]).cuda()
    full = copy.deepcopy(effnet).cuda().requires_grad_(True)
    params = sum(p.numel() * p.element_size() for p in full.parameters())
    used, how = step_memory(full, x, y)
    assert "max_memory_allocated" in how and used > 3 * params, "weights, gradients, two AdamW moments"
