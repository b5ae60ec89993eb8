"""Profiles: one switch (FINETUNE_PROFILE=quick|full) that picks backbone, data and budgets for every notebook."""
import dataclasses
import os
from dataclasses import dataclass

ENV_VAR = "FINETUNE_PROFILE"
OVERRIDES_VAR = "FINETUNE_OVERRIDES"  # e.g. "image_size=112,num_epochs=5": a smaller run of the same profile
BUDGETS = ("image_size", "labels_per_class", "batch_size", "num_epochs", "lr_head", "lr_finetune")


@dataclass(frozen=True)
class Profile:
    """Settings that differ between the CPU quick profile and the GPU full profile."""
    name: str
    arch: str              # backbone architecture (see models.ARCHITECTURES)
    dataset: str           # target dataset (see data.load_data)
    image_size: int        # side of the images the model sees
    labels_per_class: int  # few-label training split
    batch_size: int
    num_epochs: int        # default epochs for one training stage
    lr_head: float         # default learning rate for a new head
    lr_finetune: float     # default learning rate for pretrained layers


PROFILES = {
    "quick": Profile("quick", "efficientnet_lite0", "digits", 64, 20, 32, 10, 1e-3, 1e-4),
    "full": Profile("full", "resnet18", "flowers102", 224, 10, 64, 15, 1e-3, 1e-4),
}


def get_profile(name=None):
    """Return the Profile named by `name` or $FINETUNE_PROFILE (default quick); used by every notebook."""
    name = (name or os.environ.get(ENV_VAR) or "quick").strip().lower()
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r}: set {ENV_VAR} to one of {sorted(PROFILES)} "
                         f"(quick = CPU/offline, full = GPU/download).")
    return with_overrides(PROFILES[name], os.environ.get(OVERRIDES_VAR, ""))


def with_overrides(profile, text):
    """`profile` with budgets replaced from "key=value,..." (get_profile reads them from $FINETUNE_OVERRIDES)."""
    types = {f.name: f.type for f in dataclasses.fields(Profile) if f.name in BUDGETS}
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = (part.strip() for part in item.partition("="))
        if key not in types or not value:
            raise ValueError(f"{OVERRIDES_VAR}: cannot read {item!r}; write key=value pairs separated by commas, "
                             f"with keys from {list(BUDGETS)}.")
        changes[key] = _positive(types[key], key, value)
    return dataclasses.replace(profile, **changes) if changes else profile


def _positive(kind, key, value):
    """`value` as a positive int or float, or a ValueError naming the override `key`."""
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0:
        raise ValueError(f"{OVERRIDES_VAR}: {key} must be a positive {kind.__name__}, got {value!r}.")
    return number
