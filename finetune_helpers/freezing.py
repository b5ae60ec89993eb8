"""Freezing: requires_grad switches, parameter counts, and keeping frozen BatchNorm statistics still (01, 03)."""
import torch
from torch import nn

from .models import head_of


def freeze(module):
    """Stop gradient updates for every parameter of `module` (01_freezing exercise, package version)."""
    for param in module.parameters():
        param.requires_grad = False
    return module


def unfreeze(module):
    """Let every parameter of `module` be trained again."""
    for param in module.parameters():
        param.requires_grad = True
    return module


def freeze_all_but_head(model):
    """Freeze the whole model, then unfreeze its head (02_head_only onwards)."""
    freeze(model)
    unfreeze(head_of(model))
    return model


def count_params(model):
    """Return (trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def trainable_parameters(model):
    """Yield only the parameters that require grad: what the optimizer should get."""
    return (p for p in model.parameters() if p.requires_grad)


def set_bn_eval(model, only_frozen=False):
    """Put BatchNorm layers in eval mode (all, or only fully frozen ones) so running statistics stay put."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not only_frozen or not any(p.requires_grad for p in module.parameters()):
                module.eval()
    return model


def snapshot(model):
    """Copy every parameter and buffer (running statistics too) to compare after training."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def changed_frozen(model, before):
    """Names of frozen parameters and BN buffers of frozen layers that differ from `before` (01_freezing)."""
    frozen_modules = {name for name, m in model.named_modules()
                      if list(m.parameters(recurse=False)) and
                      not any(p.requires_grad for p in m.parameters(recurse=False))}
    changed = []
    for name, tensor in model.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        if owner in frozen_modules and leaf != "num_batches_tracked" and not torch.equal(tensor, before[name]):
            changed.append(name)
    return changed
