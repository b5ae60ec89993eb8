"""Saving a fine-tuned model and loading it back for inference: state dict + architecture, class count, meta."""
from pathlib import Path

import torch

from .models import ARCHITECTURES, build_model, head_of

FORMAT = "finetune_helpers.checkpoint/1"


def _signature(model):
    """{name: shape} of the model's state dict: what identifies its architecture."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def architecture_of(model):
    """The name in models.ARCHITECTURES whose build_model gives this model's layout; ValueError if none does."""
    num_classes = head_of(model).out_features
    signature = _signature(model)
    for arch in ARCHITECTURES:
        with torch.device("meta"):  # layout only: no memory, no weights, no download
            candidate = build_model(num_classes, arch, pretrained=False)
        if _signature(candidate) == signature:
            return arch
    raise ValueError(f"save_model saves models made by build_model (one of {ARCHITECTURES}); this "
                     f"{type(model).__name__} matches none of them.")


def save_model(model, path, **meta):
    """Save the weights, architecture, class count and `meta` (plain values: str, numbers, lists, dicts)."""
    checkpoint = dict(format=FORMAT, arch=architecture_of(model), num_classes=head_of(model).out_features,
                      meta=meta, state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def load_model(path, device="cpu"):
    """Rebuild a model saved by save_model, in eval mode on `device`; its meta dict is `model.meta`.

    Only tensors and plain values are unpickled (weights_only=True): a checkpoint cannot run code.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by save_model.")
    model = build_model(checkpoint["num_classes"], checkpoint["arch"], pretrained=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.meta = dict(checkpoint["meta"])
    return model.to(device).eval()
