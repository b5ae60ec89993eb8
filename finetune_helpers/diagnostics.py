"""Diagnostics: how far each layer group's weights moved from their pretrained values (03, 04, 05), and how
much an accuracy measured on a few hundred images can be trusted (03, 06)."""
import math

import torch

from .models import layer_groups


def group_changes(model, before):
    """{group: (‖W−W₀‖/‖W₀‖, whether any weight or BN statistic differs)}; `before` is freezing.snapshot(model).

    A group whose tensors have no counterpart of the same shape in `before` (a replaced head) reports
    (nan, True): there is nothing to compare it with (05_review).
    """
    state = model.state_dict(keep_vars=True)
    changes = {}
    for group, module in layer_groups(model):
        mine = {id(t) for t in [*module.parameters(), *module.buffers()]}
        names = [name for name, t in state.items() if id(t) in mine]
        if any(name not in before or before[name].shape != state[name].shape for name in names):
            changes[group] = (math.nan, True)
            continue
        weights = [name for name in names if isinstance(state[name], torch.nn.Parameter)]
        moved = sum(((state[n].detach().float() - before[n].float()) ** 2).sum() for n in weights) ** 0.5
        size = sum((before[n].float() ** 2).sum() for n in weights) ** 0.5
        changed = any(not torch.equal(state[n].detach(), before[n]) for n in names)
        changes[group] = (float(moved / size), changed)
    return changes


def weight_drift(model, before):
    """{group name: ‖W−W₀‖/‖W₀‖} over each layer group's parameters (BN statistics excluded) (03, 04)."""
    return {group: drift for group, (drift, _) in group_changes(model, before).items()}


def accuracy_se(acc, n):
    """Standard error of an accuracy measured on `n` examples (Agresti-Coull: not 0 at 0% or 100%)."""
    if n < 1 or not 0 <= acc <= 1:
        raise ValueError(f"accuracy_se needs 0 <= acc <= 1 and n >= 1, got acc={acc!r}, n={n!r}.")
    p = (acc * n + 2) / (n + 4)
    return math.sqrt(p * (1 - p) / (n + 4))
