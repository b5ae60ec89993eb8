"""Unit tests for finetune_helpers.freezing: requires_grad switches, counts, BatchNorm and frozen-weight checks."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from finetune_helpers.freezing import (changed_frozen, count_params, freeze, freeze_all_but_head, set_bn_eval,
                                       snapshot, trainable_parameters, unfreeze)
from finetune_helpers.models import head_of, load_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import tiny_net, toy_images  # noqa: E402


def _grad_flags(module):
    return [p.requires_grad for p in module.parameters()]


def _one_step(model, lr=0.1):
    """One SGD step on toy data, in whatever mode the model is in."""
    images, labels = toy_images(16)
    params = list(trainable_parameters(model))
    optimizer = torch.optim.SGD(params, lr=lr)
    loss = nn.functional.cross_entropy(model(images.float() / 255), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------ freeze / unfreeze

def test_freeze_and_unfreeze_whole_model():
    model = tiny_net()
    assert freeze(model) is model
    assert not any(_grad_flags(model))
    assert unfreeze(model) is model
    assert all(_grad_flags(model))


def test_freeze_a_submodule_only():
    model = tiny_net()
    freeze(model.features[0])
    assert not any(_grad_flags(model.features[0]))
    assert all(_grad_flags(model.features[1])) and all(_grad_flags(model.fc))


def test_frozen_params_get_no_gradient():
    model = freeze(tiny_net())
    unfreeze(model.fc)
    images, labels = toy_images(4)
    nn.functional.cross_entropy(model(images.float()), labels).backward()
    assert all(p.grad is None for p in model.features.parameters())
    assert all(p.grad is not None for p in model.fc.parameters())


def test_freeze_all_but_head_tiny_and_resnet():
    for model in (tiny_net(), load_backbone("resnet18", pretrained=False)):
        assert freeze_all_but_head(model) is model
        head_ids = {id(p) for p in head_of(model).parameters()}
        for param in model.parameters():
            assert param.requires_grad == (id(param) in head_ids)
        trainable, total = count_params(model)
        assert trainable == sum(p.numel() for p in head_of(model).parameters())


def test_freeze_all_but_head_efficientnet():
    model = freeze_all_but_head(load_backbone("efficientnet_lite0", pretrained=False))
    assert count_params(model) == (1280 * 1000 + 1000, 4_652_008)


def test_freeze_all_but_head_refrozen_after_full_unfreeze():
    model = unfreeze(tiny_net())
    freeze_all_but_head(model)
    assert not any(_grad_flags(model.features)) and all(_grad_flags(model.fc))


# ------------------------------------------------------------------ counting

def test_count_params_known_values():
    layer = nn.Linear(3, 4)
    assert count_params(layer) == (16, 16)
    freeze(layer)
    assert count_params(layer) == (0, 16)
    layer.bias.requires_grad = True
    assert count_params(layer) == (4, 16)


def test_count_params_resnet18():
    model = load_backbone("resnet18", pretrained=False)
    assert count_params(model) == (11_689_512, 11_689_512)
    freeze(model.layer4)
    trainable, total = count_params(model)
    assert total == 11_689_512
    assert trainable == 11_689_512 - sum(p.numel() for p in model.layer4.parameters())


def test_count_params_ignores_buffers():
    bn = nn.BatchNorm2d(5)
    assert count_params(bn) == (10, 10)  # weight + bias; running stats are buffers


def test_trainable_parameters_yields_exactly_the_trainable_ones():
    model = tiny_net()
    freeze(model.features)
    params = trainable_parameters(model)
    assert iter(params) is params, "an iterator/generator, as optimizers accept"
    params = list(params)
    assert [id(p) for p in params] == [id(p) for p in model.fc.parameters()]
    unfreeze(model)
    assert len(list(trainable_parameters(model))) == len(list(model.parameters()))
    freeze(model)
    assert list(trainable_parameters(model)) == []


# ------------------------------------------------------------------ BatchNorm

def _bn_modes(model):
    return [m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_set_bn_eval_all():
    model = tiny_net().train()
    assert set_bn_eval(model) is model
    assert _bn_modes(model) == [False, False]
    assert model.training and model.features[0].training and model.fc.training, "only BatchNorm goes to eval"


def test_set_bn_eval_covers_1d_and_timm_batchnorm():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).train()
    set_bn_eval(model)
    assert not model[1].training and model[0].training
    effnet = load_backbone("efficientnet_lite0", pretrained=False).train()
    set_bn_eval(effnet)
    bn_modes = _bn_modes(effnet)
    assert len(bn_modes) == 49 and not any(bn_modes)
    assert effnet.training and effnet.conv_stem.training


def test_set_bn_eval_only_frozen():
    model = tiny_net().train()
    freeze(model.features[1])  # the first BN
    set_bn_eval(model, only_frozen=True)
    assert _bn_modes(model) == [False, True]
    model.features[4].weight.requires_grad = False  # half-frozen BN is not "fully frozen"
    set_bn_eval(model, only_frozen=True)
    assert _bn_modes(model) == [False, True]
    model.features[4].bias.requires_grad = False
    set_bn_eval(model, only_frozen=True)
    assert _bn_modes(model) == [False, False]


# ------------------------------------------------------------------ snapshot / changed_frozen

def test_snapshot_is_a_detached_copy_with_buffers():
    model = tiny_net()
    before = snapshot(model)
    assert set(before) == set(model.state_dict())
    assert "features.1.running_mean" in before and "features.1.num_batches_tracked" in before
    with torch.no_grad():
        model.fc.weight.add_(1.0)
        model.features[1].running_mean.add_(1.0)
    assert not torch.equal(before["fc.weight"], model.fc.weight)
    assert not torch.equal(before["features.1.running_mean"], model.features[1].running_mean)
    assert not any(t.requires_grad for t in before.values())


def test_changed_frozen_empty_for_untouched_model():
    model = freeze_all_but_head(tiny_net())
    assert changed_frozen(model, snapshot(model)) == []


def test_changed_frozen_names_a_modified_frozen_weight_only():
    model = freeze_all_but_head(tiny_net())
    before = snapshot(model)
    with torch.no_grad():
        model.features[3].weight[0, 0, 0, 0] += 1e-3
        model.fc.weight.add_(1.0)  # trainable: not reported
    assert changed_frozen(model, before) == ["features.3.weight"]


def test_changed_frozen_detects_bn_running_stats_in_train_mode():
    model = freeze_all_but_head(tiny_net()).train()
    before = snapshot(model)
    _one_step(model)
    changed = changed_frozen(model, before)
    assert set(changed) == {"features.1.running_mean", "features.1.running_var",
                            "features.4.running_mean", "features.4.running_var"}, changed
    assert not any(name.endswith("num_batches_tracked") for name in changed)


def test_changed_frozen_clean_after_set_bn_eval():
    model = set_bn_eval(freeze_all_but_head(tiny_net()).train())
    before = snapshot(model)
    _one_step(model)
    assert changed_frozen(model, before) == []
    assert not torch.equal(model.fc.weight, before["fc.weight"]), "the head did train"


def test_changed_frozen_ignores_bn_stats_of_trainable_layers():
    model = tiny_net().train()
    freeze(model.features[0])  # only the first conv frozen; its BN still trainable
    before = snapshot(model)
    _one_step(model)
    assert changed_frozen(model, before) == []


def test_changed_frozen_catches_weight_decay_on_frozen_params():
    """An optimizer built before freezing still decays weights whose grad is zero (not None)."""
    model = tiny_net()
    set_bn_eval(model.train())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    freeze(model.features[0])
    before = snapshot(model)
    for p in model.features[0].parameters():
        p.grad = torch.zeros_like(p)
    images, labels = toy_images(8)
    nn.functional.cross_entropy(model(images.float() / 255), labels).backward()
    optimizer.step()
    assert set(changed_frozen(model, before)) == {"features.0.weight", "features.0.bias"}


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_changed_frozen_on_real_architectures(arch):
    model = freeze_all_but_head(load_backbone(arch, pretrained=False))
    before = snapshot(model)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    changed = changed_frozen(model, before)
    assert changed and all("running_" in name for name in changed)
    model.load_state_dict(before)
    set_bn_eval(model)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert changed_frozen(model, before) == []
