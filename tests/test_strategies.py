"""Unit tests for finetune_helpers.strategies: discriminative LRs, unfreezing the top groups, staged fine-tuning."""
import sys
from pathlib import Path

import pytest
import torch

from finetune_helpers import strategies
from finetune_helpers.data import TensorLoader
from finetune_helpers.freezing import count_params, freeze, freeze_all_but_head, snapshot
from finetune_helpers.models import layer_groups, load_backbone
from finetune_helpers.strategies import discriminative_param_groups, staged_finetune, unfreeze_last
from finetune_helpers.training import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import tiny_net, toy_images  # noqa: E402

RESNET_TOP_DOWN = ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    model = load_backbone("resnet18", pretrained=False)
    torch.nn.init.zeros_(model.fc.bias)
    return model


def _ids(params):
    return [id(p) for p in params]


# ------------------------------------------------------------------ discriminative_param_groups

def test_discriminative_groups_scale_lr_by_depth(resnet):
    groups = discriminative_param_groups(resnet, lr=1e-3, factor=0.5)
    assert [g["name"] for g in groups] == RESNET_TOP_DOWN
    for depth, group in enumerate(groups):
        assert group["lr"] == pytest.approx(1e-3 * 0.5 ** depth)
    modules = dict(layer_groups(resnet))
    for group in groups:
        assert _ids(group["params"]) == _ids(modules[group["name"]].parameters())


def test_discriminative_groups_cover_each_trainable_param_once(resnet):
    groups = discriminative_param_groups(resnet, lr=1e-3)
    ids = [i for g in groups for i in _ids(g["params"])]
    assert len(ids) == len(set(ids)) and set(ids) == set(_ids(resnet.parameters()))


def test_discriminative_groups_only_trainable_params(resnet):
    unfreeze_last(resnet, 3)  # fc, layer4, layer3
    resnet.layer3[0].conv1.weight.requires_grad = False  # a partly frozen group keeps its trainable rest
    groups = discriminative_param_groups(resnet, lr=0.1, factor=0.1)
    assert [g["name"] for g in groups] == ["fc", "layer4", "layer3"]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.01, 0.001])
    params = [p for g in groups for p in g["params"]]
    assert all(p.requires_grad for p in params)
    assert sum(p.numel() for p in params) == count_params(resnet)[0]
    assert id(resnet.layer3[0].conv1.weight) not in _ids(params)


def test_discriminative_groups_keep_depth_when_a_middle_group_is_frozen(resnet):
    freeze(resnet.layer4)
    groups = discriminative_param_groups(resnet, lr=1.0, factor=0.5)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert "layer4" not in lrs
    assert lrs["fc"] == 1.0 and lrs["layer3"] == 0.25, "depth counts layer groups, not trainable ones"


def test_discriminative_groups_efficientnet():
    model = load_backbone("efficientnet_lite0", pretrained=False)
    groups = discriminative_param_groups(model, lr=1e-2, factor=0.8)
    assert [g["name"] for g in groups] == ["classifier", "conv_head"] + [f"blocks.{i}" for i in range(6, -1, -1)] \
        + ["stem"]
    assert groups[-1]["lr"] == pytest.approx(1e-2 * 0.8 ** 9)


def test_discriminative_groups_work_with_make_optimizer(resnet):
    freeze_all_but_head(resnet)
    optimizer = make_optimizer(discriminative_param_groups(resnet, lr=0.01), lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01]
    assert [g["name"] for g in optimizer.param_groups] == ["fc"]


def test_discriminative_groups_all_frozen_gives_empty_list_and_optimizer_refuses(resnet):
    freeze(resnet)
    assert discriminative_param_groups(resnet, lr=0.01) == []
    with pytest.raises(ValueError, match="no parameters"):
        make_optimizer(discriminative_param_groups(resnet, lr=0.01), lr=0.01)


def test_factor_one_gives_equal_lrs(resnet):
    assert {g["lr"] for g in discriminative_param_groups(resnet, lr=0.3, factor=1)} == {0.3}


@pytest.mark.parametrize("factor", [0, -0.5, 1.5, 2])
def test_discriminative_groups_bad_factor(resnet, factor):
    with pytest.raises(ValueError, match="factor"):
        discriminative_param_groups(resnet, lr=1e-3, factor=factor)


def test_discriminative_groups_unknown_model():
    with pytest.raises(ValueError, match="layer_groups"):
        discriminative_param_groups(tiny_net(), lr=1e-3)


# ------------------------------------------------------------------ unfreeze_last

@pytest.mark.parametrize("num_groups", [1, 2, 4, 6])
def test_unfreeze_last(resnet, num_groups):
    assert unfreeze_last(resnet, num_groups) is resnet
    groups = layer_groups(resnet)
    for index, (name, module) in enumerate(groups):
        expected = index >= len(groups) - num_groups
        assert all(p.requires_grad == expected for p in module.parameters()), name


def test_unfreeze_last_refreezes_lower_groups(resnet):
    unfreeze_last(resnet, 6)
    unfreeze_last(resnet, 2)
    assert not any(p.requires_grad for p in resnet.layer3.parameters())
    assert all(p.requires_grad for p in resnet.layer4.parameters())


@pytest.mark.parametrize("num_groups", [0, -1, 7])
def test_unfreeze_last_out_of_range(resnet, num_groups):
    flags = [p.requires_grad for p in resnet.parameters()]
    with pytest.raises(ValueError, match=r"1\.\.6"):
        unfreeze_last(resnet, num_groups)
    assert [p.requires_grad for p in resnet.parameters()] == flags, "a refused call changes nothing"


def test_unfreeze_last_efficientnet():
    model = unfreeze_last(load_backbone("efficientnet_lite0", pretrained=False), 3)
    trainable = {name for name, module in layer_groups(model) if all(p.requires_grad for p in module.parameters())}
    assert trainable == {"blocks.6", "conv_head", "classifier"}
    with pytest.raises(ValueError, match=r"1\.\.10"):
        unfreeze_last(model, 11)


# ------------------------------------------------------------------ staged_finetune

def _resnet_loaders():
    train = toy_images(16, size=32, seed=0)
    test = toy_images(8, size=32, seed=1)
    return TensorLoader(*train, batch_size=8, shuffle=True), TensorLoader(*test, batch_size=8)


def test_staged_finetune(resnet, monkeypatch):
    calls = []
    real_fit = strategies.fit

    def spy(model, *args, **kwargs):
        trainable = {name for name, m in layer_groups(model) if any(p.requires_grad for p in m.parameters())}
        optimizer = kwargs.get("optimizer")
        calls.append((trainable, kwargs, None if optimizer is None else
                      {g.get("name"): g["lr"] for g in optimizer.param_groups}))
        return real_fit(model, *args, **kwargs)
    monkeypatch.setattr(strategies, "fit", spy)

    train_loader, val_loader = _resnet_loaders()
    before = snapshot(resnet)
    history = staged_finetune(resnet, train_loader, val_loader, head_lr=1e-2, lr=1e-3, head_epochs=2,
                              num_epochs=3, num_groups=2, factor=0.1, progress=False)
    # stage 1: the head alone at head_lr; stage 2: fc + layer4 at discriminative lrs
    (stage1, kw1, _), (stage2, kw2, lrs2) = calls
    assert stage1 == {"fc"} and kw1["lr"] == 1e-2 and kw1["num_epochs"] == 2
    assert stage2 == {"fc", "layer4"} and kw2["num_epochs"] == 3
    assert lrs2 == pytest.approx({"fc": 1e-3, "layer4": 1e-4})
    # the history: 5 epochs numbered 1..5, labelled by stage, time running on
    assert len(history) == 5
    assert history.column("epoch") == [1, 2, 3, 4, 5]
    assert history.column("stage") == ["head", "head", "unfrozen", "unfrozen", "unfrozen"]
    seconds = history.column("seconds")
    assert all(a <= b for a, b in zip(seconds, seconds[1:]))
    assert all(0 <= row["val_acc"] <= 1 for row in history)
    # what moved: layer4 and fc; nothing below
    after = resnet.state_dict()
    for name, tensor in before.items():
        moved = not torch.equal(after[name], tensor)
        if name.startswith(("fc.", "layer4.")) and name.endswith(("weight", "bias")):
            assert moved, f"{name} should have trained"
        elif not name.startswith(("fc.", "layer4.")):
            assert not moved, f"{name} is below the unfrozen groups and must not change"


def test_staged_finetune_without_head_stage(resnet):
    train_loader, _ = _resnet_loaders()
    history = staged_finetune(resnet, train_loader, head_lr=1e-2, lr=1e-3, head_epochs=0, num_epochs=1,
                              num_groups=1, progress=False)
    assert history.column("stage") == ["unfrozen"] and history.column("epoch") == [1]


def test_staged_finetune_bad_num_groups(resnet):
    train_loader, _ = _resnet_loaders()
    with pytest.raises(ValueError, match="num_groups"):
        staged_finetune(resnet, train_loader, head_lr=1e-2, lr=1e-3, head_epochs=0, num_epochs=1,
                        num_groups=9, progress=False)
