"""The train/validation/test splits every profile returns (ImageData) and the seeded few-label draw (data, photos)."""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch


@dataclass
class ImageData:
    """Train/validation/test images (uint8, N×3×H×W), labels, class names and how to normalise/augment them."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    train_transform: Optional[Callable] = None  # float batch in [0, 1] -> float batch (augmentation)
    test_transform: Optional[Callable] = None   # validation and test batches (and cached features)

    @property
    def num_classes(self):
        """Number of target classes."""
        return len(self.classes)


def few_label_split(labels, labels_per_class, seed=0, exclude=()):
    """Indices of `labels_per_class` examples of every class, chosen with `seed`, skipping `exclude`."""
    labels = np.asarray(labels)
    pool = np.setdiff1d(np.arange(len(labels)), np.asarray(exclude, dtype=int))
    counts = np.bincount(labels[pool], minlength=labels.max() + 1)
    if labels_per_class < 1 or labels_per_class > counts.min():
        raise ValueError(f"labels_per_class={labels_per_class} is impossible: the smallest class has "
                         f"{counts.min()} training examples; pick 1..{counts.min()}.")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(pool[labels[pool] == c], labels_per_class, replace=False) for c in range(len(counts))]
    return np.sort(np.concatenate(picks))
