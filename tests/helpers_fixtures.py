"""Small models and synthetic data shared by the unit tests (imported explicitly, not a conftest)."""
import numpy as np
import torch
from PIL import Image
from torch import nn

from finetune_helpers.data import TensorLoader


class TinyNet(nn.Module):
    """Conv-BN-ReLU ×2, global pool, and a Linear head called `fc`: trains in milliseconds on the CPU."""

    def __init__(self, num_classes=2, width=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def tiny_net(num_classes=2, seed=0):
    """A TinyNet with a seeded initialisation."""
    torch.manual_seed(seed)
    return TinyNet(num_classes)


def toy_images(n=64, size=8, seed=0):
    """An easy two-class problem: uint8 images whose class is their brightness (dark 0 / bright 1)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels[:, None, None, None] == 1, 170.0, 60.0)
    noise = torch.randn(n, 3, size, size, generator=generator) * 25
    return (base + noise).clamp(0, 255).round().to(torch.uint8), labels


def toy_loaders(n_train=64, n_test=32, batch_size=16, size=8, seed=0):
    """(train_loader, test_loader) over toy_images: shuffled train, plain test."""
    train = toy_images(n_train, size, seed)
    test = toy_images(n_test, size, seed + 1000)
    return (TensorLoader(*train, batch_size=batch_size, shuffle=True, seed=seed),
            TensorLoader(*test, batch_size=batch_size))


def blobs(n=60, dim=16, num_classes=3, seed=0, spread=0.5, noise_seed=None):
    """Linearly separable Gaussian feature blobs (features float32, labels int64), like cached features.

    `seed` picks the class centres, `noise_seed` (default: `seed`) the scatter around them, so a test set is
    blobs(..., seed=s, noise_seed=other): same classes, new examples.
    """
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)) * 3
    noise = torch.Generator().manual_seed(seed if noise_seed is None else noise_seed)
    labels = torch.arange(n) % num_classes
    return centres[labels] + spread * torch.randn(n, dim, generator=noise), labels


# ------------------------------------------------------------------ a stand-in for Flowers-102 (full profile)

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 230)]  # one dominant colour per class
PER_SPLIT = {"trnid": 2, "valid": 2, "tstid": 3}          # images per class in each split
SIZES = [(40, 56), (56, 40), (48, 48)]                    # landscape, portrait, square


def write_fake_flowers(root, grey_image=True, colours=COLOURS, per_split=PER_SPLIT):
    """Write a Flowers-102 stand-in (one class per colour) where torchvision looks; return {image_id: label}."""
    from scipy.io import savemat
    base = root / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    labels, split_ids, image_id = {}, {key: [] for key in per_split}, 0
    rng = np.random.default_rng(0)
    for key, count in per_split.items():
        for label, colour in enumerate(colours):
            for _ in range(count):
                image_id += 1
                height, width = SIZES[image_id % len(SIZES)]
                pixels = np.clip(np.array(colour) + rng.normal(0, 8, (height, width, 3)), 0, 255)
                image = Image.fromarray(pixels.astype(np.uint8))
                if grey_image and image_id == 1:
                    image = image.convert("L")  # Flowers-102 has a few; decoding must still give 3 channels
                image.save(base / "jpg" / f"image_{image_id:05d}.jpg", quality=95)
                labels[image_id] = label
                split_ids[key].append(image_id)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels[i] + 1 for i in sorted(labels)])})
    savemat(base / "setid.mat", {key: np.array(ids) for key, ids in split_ids.items()})
    return labels
