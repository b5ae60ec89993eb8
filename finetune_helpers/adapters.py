"""Parameter-efficient fine-tuning (06): BitFit / norm-only, LoRA by hand with merge(), the same through peft.

Also what each strategy costs: the bytes to store per task and the memory of one training step.
"""
import copy
import io
import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from .freezing import freeze, trainable_parameters, unfreeze
from .models import head_name, head_of, layer_groups
from .training import train_epoch

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
WHICH = ("bias", "norm")  # BitFit: every bias; norm-only: the affine weight and bias of normalisation layers


def train_only(model, which="bias"):
    """Freeze everything but the head and every bias ('bias', BitFit) or norm-layer affine ('norm'); return model."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH} ('bias' = BitFit, 'norm' = normalisation layers' "
                         f"weight and bias), got {which!r}.")
    freeze(model)
    if which == "bias":
        for name, param in model.named_parameters():
            if name.rpartition(".")[2] == "bias":
                param.requires_grad = True
    else:
        for module in model.modules():
            if isinstance(module, NORM_TYPES):
                unfreeze(module)
    unfreeze(head_of(model))
    return model


def _positive_int(value, what):
    """`value` as an int >= 1, or a ValueError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}.")
    return int(value)


def lora_supports(module):
    """True for what LoRA here can wrap: a plain nn.Linear, or a plain 1x1 nn.Conv2d with groups=1."""
    if type(module) is nn.Linear:
        return True
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros")


class LoRA(nn.Module):
    """A frozen nn.Linear or 1x1 nn.Conv2d plus a trainable low-rank update (alpha / r) * B @ A (Hu et al., 2021).

    A (r × in) starts random, B (out × r) starts at zero, so the wrapped layer first computes exactly what the
    pretrained one did; `merge()` folds the update into the weight and returns the plain layer.
    """

    def __init__(self, base, r=4, alpha=None):
        super().__init__()
        if not lora_supports(base):
            raise ValueError(f"LoRA wraps an nn.Linear or a 1x1 nn.Conv2d with groups=1, got {base!r}: "
                             f"a kxk or depthwise convolution is not a matrix product over channels.")
        r = _positive_int(r, "r (the rank)")
        alpha = r if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"alpha must be a positive number (the update is scaled by alpha / r), got {alpha!r}.")
        out_features, in_features = base.weight.shape[:2]
        if r > min(in_features, out_features):
            raise ValueError(f"r={r} is not low rank for a {in_features}->{out_features} layer: "
                             f"pick 1..{min(in_features, out_features)}.")
        self.base, self.r, self.alpha, self.scale = freeze(base), r, alpha, alpha / r
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft) initialise A

    def delta_weight(self):
        """The update (alpha / r) * B @ A, shaped like the base layer's weight."""
        return (self.scale * self.lora_B @ self.lora_A).view_as(self.base.weight)

    def forward(self, x):
        """base(x) + scale * B(A(x)), without ever forming the full-size update."""
        base = self.base
        if isinstance(base, nn.Linear):
            low = F.linear(F.linear(x, self.lora_A), self.lora_B)
        else:
            low = F.conv2d(x, self.lora_A[:, :, None, None], stride=base.stride, padding=base.padding,
                           dilation=base.dilation)
            low = F.conv2d(low, self.lora_B[:, :, None, None])
        return base(x) + self.scale * low

    @torch.no_grad()
    def merge(self):
        """Return the base layer with the update folded into its weight: same outputs, no extra cost."""
        merged = copy.deepcopy(self.base)
        merged.weight += self.delta_weight().to(merged.weight.dtype)
        return merged

    def extra_repr(self):
        """Rank and scale, shown by print(model)."""
        return f"r={self.r}, alpha={self.alpha}"


def _named(model):
    """{id(module): qualified name} for every submodule of `model`."""
    return {id(module): name for name, module in model.named_modules()}


def lora_targets(model, group_names):
    """Qualified names of the modules LoRA can wrap inside the named layer groups (the head is refused)."""
    groups, head = dict(layer_groups(model)), head_name(model)
    unknown = [g for g in group_names if g not in groups]
    if isinstance(group_names, str) or unknown or not group_names:
        raise ValueError(f"group_names must be a non-empty list of layer group names from "
                         f"{[g for g in groups if g != head]}, got {group_names!r}.")
    if head in group_names:
        raise ValueError(f"The head ({head!r}) is new for the task and trained in full: leave it out of "
                         f"group_names.")
    names = _named(model)
    targets = [names[id(m)] for g in group_names for m in groups[g].modules() if lora_supports(m)]
    if not targets:
        raise ValueError(f"Layer groups {list(group_names)} hold no nn.Linear or 1x1 nn.Conv2d for LoRA.")
    return targets


def add_lora(model, group_names, r=4, alpha=None):
    """Freeze `model`, wrap every Linear / 1x1 conv of the named groups in LoRA, keep the head trainable."""
    if any(isinstance(m, LoRA) for m in model.modules()):
        raise ValueError("This model already holds LoRA layers: merge_lora(model) first, or start from a fresh one.")
    targets = lora_targets(model, group_names)
    freeze(model)
    for name in targets:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, LoRA(getattr(parent, leaf), r, alpha))
    unfreeze(head_of(model))
    return model


def merge_lora(model):
    """Replace every LoRA wrapper in `model` by its merged plain layer (in place); return model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRA):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, module.merge())
    return model


def peft_lora(model, group_names, r=4, alpha=None):
    """The same LoRA built by Hugging Face peft: LoraConfig + get_peft_model on `model` (changed in place)."""
    from peft import LoraConfig, get_peft_model  # imported here: peft pulls in transformers (seconds)
    config = LoraConfig(r=_positive_int(r, "r (the rank)"), lora_alpha=r if alpha is None else alpha,
                        target_modules=lora_targets(model, group_names), lora_dropout=0.0, bias="none",
                        modules_to_save=[head_name(model)])
    return get_peft_model(model, config)


def task_state(model):
    """What must be saved per task on top of the shared pretrained backbone: the trainable parameters."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def saved_bytes(state):
    """Bytes that torch.save writes for a state dict (what one task costs on disk)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def _tensor_bytes(tensors):
    """Total bytes of a collection of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)


def step_memory(model, x, y, lr=1e-4):
    """Bytes one AdamW training step on (x, y) needs, as fit takes it; the step changes `model`: pass a copy.

    Returns (bytes, what was measured).

    CUDA: the allocator's peak during the step (torch.cuda.max_memory_allocated) minus what was allocated before,
    plus the model's parameters. Elsewhere: parameters + gradients + optimizer state + the activations autograd
    saved for the backward pass (each storage counted once, parameters not twice); temporaries not counted.
    """
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=lr)
    device = params[0].device
    cuda = device.type == "cuda"
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    saved = {}

    def pack(tensor):
        """Record each storage autograd keeps for backward (once), then keep the tensor as is."""
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in param_storages:
            saved[ptr] = tensor.untyped_storage().nbytes()
        return tensor

    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        train_epoch(model, [(x, y)], optimizer)  # the step fit takes: BN in eval mode, bf16 autocast on CUDA
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before + _tensor_bytes(params)
        return peak, "CUDA peak allocated during the step (torch.cuda.max_memory_allocated), parameters included"
    grads = [p.grad for p in params if p.grad is not None]
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    total = _tensor_bytes(params) + _tensor_bytes(grads) + _tensor_bytes(state) + sum(saved.values())
    return total, "parameters + gradients + AdamW state + activations saved for backward (no temporaries)"
