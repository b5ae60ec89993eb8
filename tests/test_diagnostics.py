"""Unit tests for finetune_helpers.diagnostics.weight_drift: per-group ‖W−W₀‖/‖W₀‖."""
import math

import pytest
import torch

from finetune_helpers import diagnostics
from finetune_helpers.diagnostics import group_changes, weight_drift
from finetune_helpers.freezing import snapshot
from finetune_helpers.models import layer_groups, load_backbone, replace_head


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return load_backbone("resnet18", pretrained=False)


def test_untouched_model_has_zero_drift(resnet):
    drift = weight_drift(resnet, snapshot(resnet))
    assert list(drift) == [name for name, _ in layer_groups(resnet)]
    assert all(value == 0.0 for value in drift.values())
    assert all(isinstance(value, float) for value in drift.values())


def test_known_perturbation_of_one_group():
    torch.manual_seed(1)
    model = load_backbone("resnet18", pretrained=False)
    before = snapshot(model)
    delta = torch.randn_like(model.layer3[1].conv2.weight) * 0.01
    with torch.no_grad():
        model.layer3[1].conv2.weight.add_(delta)
    group_norm = math.sqrt(sum(p.double().pow(2).sum().item() for p in
                               (before[n] for n, _ in model.layer3.named_parameters(prefix="layer3"))))
    drift = weight_drift(model, before)
    assert drift["layer3"] == pytest.approx(delta.double().norm().item() / group_norm, rel=1e-4)
    assert all(value == 0.0 for name, value in drift.items() if name != "layer3")


def test_scaling_a_whole_group_gives_the_scale_minus_one():
    torch.manual_seed(2)
    model = load_backbone("resnet18", pretrained=False)
    before = snapshot(model)
    with torch.no_grad():
        for p in model.fc.parameters():
            p.mul_(1.5)
        for p in model.layer1.parameters():
            p.mul_(-1.0)
    drift = weight_drift(model, before)
    assert drift["fc"] == pytest.approx(0.5, rel=1e-5)
    assert drift["layer1"] == pytest.approx(2.0, rel=1e-5)
    assert drift["stem"] == 0.0


def test_buffers_do_not_count():
    torch.manual_seed(3)
    model = load_backbone("resnet18", pretrained=False)
    before = snapshot(model)
    with torch.no_grad():
        model.bn1.running_mean.add_(5.0)
    assert all(value == 0.0 for value in weight_drift(model, before).values())


def test_efficientnet_groups_and_stem_perturbation():
    model = load_backbone("efficientnet_lite0", pretrained=False)
    before = snapshot(model)
    with torch.no_grad():
        model.conv_stem.weight.mul_(1.1)
    drift = weight_drift(model, before)
    assert list(drift) == [name for name, _ in layer_groups(model)]
    stem_params = [before["conv_stem.weight"], before["bn1.weight"], before["bn1.bias"]]
    expected = 0.1 * before["conv_stem.weight"].norm() / torch.sqrt(sum(p.pow(2).sum() for p in stem_params))
    assert drift["stem"] == pytest.approx(expected.item(), rel=1e-4)
    assert all(value == 0.0 for name, value in drift.items() if name != "stem")


def test_snapshot_taken_after_replace_head():
    model = replace_head(load_backbone("resnet18", pretrained=False), 4)
    assert weight_drift(model, snapshot(model))["fc"] == 0.0


def test_group_changes_sees_bn_statistics_and_a_replaced_head():
    torch.manual_seed(4)
    model = load_backbone("resnet18", pretrained=False)
    before = snapshot(model)
    replace_head(model, 3)
    with torch.no_grad():
        model.layer2[0].bn1.running_var.mul_(2.0)
    changes = group_changes(model, before)
    assert changes["layer2"] == (0.0, True), "a moved BN statistic counts as a change but not as weight drift"
    assert changes["stem"] == (0.0, False)
    drift, changed = changes["fc"]
    assert math.isnan(drift) and changed, "a head of another shape has nothing to compare with"


def test_accuracy_se_is_the_binomial_error_and_never_zero():
    se = diagnostics.accuracy_se(0.9, 200)
    assert se == pytest.approx(math.sqrt(0.9 * 0.1 / 200), rel=0.05)  # close to the plain formula mid-range
    assert diagnostics.accuracy_se(1.0, 40) > 0 and diagnostics.accuracy_se(0.0, 40) > 0
    assert diagnostics.accuracy_se(0.5, 1000) < diagnostics.accuracy_se(0.5, 100)
    for acc, n in ((1.2, 10), (0.5, 0)):
        with pytest.raises(ValueError, match="accuracy_se"):
            diagnostics.accuracy_se(acc, n)
