"""Profiles: one switch (FINETUNE_PROFILE=quick|full) that picks backbone, data and budgets for every notebook."""
import os
from dataclasses import dataclass

ENV_VAR = "FINETUNE_PROFILE"


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
    return PROFILES[name]
