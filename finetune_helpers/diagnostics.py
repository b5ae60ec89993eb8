"""Diagnostics: how far each layer group's weights moved from their pretrained values (03, 04)."""
import torch

from .models import layer_groups


def weight_drift(model, before):
    """{group name: ‖W−W₀‖/‖W₀‖} over each layer group's parameters; `before` is freezing.snapshot(model)."""
    names = {id(p): n for n, p in model.named_parameters()}
    drift = {}
    for group, module in layer_groups(model):
        pairs = [(p.detach().float(), before[names[id(p)]].float()) for p in module.parameters()]
        moved = torch.sqrt(sum(((p - p0) ** 2).sum() for p, p0 in pairs))
        size = torch.sqrt(sum((p0 ** 2).sum() for _, p0 in pairs))
        drift[group] = (moved / size).item()
    return drift
