"""Data for both profiles as uint8 image tensors (train/val/test), and a loader that batches them on the device."""
import numpy as np
import torch
import torch.nn.functional as F

from .profiles import get_profile
from .splits import ImageData, few_label_split

DIGITS_TEST_SIZE = 500      # the fixed test set (seed DIGITS_TEST_SEED), as before the validation split existed
DIGITS_TEST_SEED = 12345
DIGITS_VAL_PER_CLASS = 20   # the fixed validation set: 20 per class from the images not in the test set
DIGITS_VAL_SEED = 54321


def load_digits_data(labels_per_class=20, seed=0, image_size=64):
    """scikit-learn's 1,797 digits as RGB uint8 images: fixed test and validation sets, seeded training draw."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    images = (x * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.int64)
    test_idx = np.random.default_rng(DIGITS_TEST_SEED).permutation(len(labels))[:DIGITS_TEST_SIZE]
    val_idx = few_label_split(digits.target, DIGITS_VAL_PER_CLASS, DIGITS_VAL_SEED, exclude=test_idx)
    train_idx = few_label_split(digits.target, labels_per_class, seed, exclude=np.concatenate([test_idx, val_idx]))
    return ImageData(train_images=images[train_idx], train_labels=labels[train_idx], val_images=images[val_idx],
                     val_labels=labels[val_idx], test_images=images[test_idx], test_labels=labels[test_idx],
                     classes=[str(d) for d in range(10)])


def load_data(profile=None, labels_per_class=None, seed=0, root=None):
    """Load the profile's target dataset as ImageData (every notebook's data cell)."""
    profile = profile if profile is not None and not isinstance(profile, str) else get_profile(profile)
    labels_per_class = profile.labels_per_class if labels_per_class is None else labels_per_class
    if profile.dataset == "digits":
        return load_digits_data(labels_per_class, seed, profile.image_size)
    from .photos import load_flowers
    return load_flowers(root=root, labels_per_class=labels_per_class, seed=seed, image_size=profile.image_size)


def fits_on_device(nbytes, device, fraction=0.5):
    """True unless `device` is a GPU whose free memory is under nbytes / fraction (TensorLoader's cache)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


class TensorLoader:
    """Batches uint8 images on the target device: shuffle, to float, augment, normalise (no DataLoader workers).

    The uint8 images are cached on `device` when they fit (on a GPU: half its free memory, see fits_on_device);
    otherwise they stay in host memory and each batch is copied over on its own.
    """

    def __init__(self, images, labels, batch_size=32, shuffle=False, device="cpu", mean=(0.5,) * 3,
                 std=(0.5,) * 3, transform=None, drop_last=False, seed=0, cache_on_device=None):
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"Need as many labels as images, and at least one: got {len(images)} images, "
                             f"{len(labels)} labels.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        if images.dtype != torch.uint8:
            raise ValueError(f"TensorLoader expects uint8 images (0..255), got {images.dtype}.")
        self.device = torch.device(device)
        if cache_on_device is None:  # images already on a GPU stay there
            cache_on_device = images.device.type == self.device.type or fits_on_device(images.nbytes, self.device)
        cache = self.device if cache_on_device else torch.device("cpu")
        self.images, self.labels = images.to(cache), labels.to(cache)
        self.batch_size, self.shuffle, self.drop_last, self.transform = batch_size, shuffle, drop_last, transform
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed):
        """Restart the shuffle order and the transform's random draws from `seed`; return the loader."""
        self.generator.manual_seed(seed)
        transform_generator = getattr(self.transform, "generator", None)
        if isinstance(transform_generator, torch.Generator):
            transform_generator.manual_seed(seed)
        return self

    def __len__(self):
        """Number of batches per epoch."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        """Yield (x, y) batches: x float, normalised, channels_last on CUDA."""
        n, cache = len(self.labels), self.images.device
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(cache, non_blocking=cache.type == "cuda")  # no wait for the GPU at each epoch start
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if cache != self.device:  # cache in host memory: copy this batch only
                x, y = (t.to(self.device, non_blocking=True) for t in (x, y))
            x = x.float().div_(255)
            if self.transform is not None:
                x = self.transform(x)
            x = (x - self.mean) / self.std
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def make_loaders(data, batch_size=32, device="cpu", seed=0):
    """Return (train_loader, val_loader, test_loader): train shuffled + augmented (reseeded), val/test plain."""
    common = dict(device=device, mean=data.mean, std=data.std)
    train_loader = TensorLoader(data.train_images, data.train_labels, batch_size, shuffle=True,
                                transform=data.train_transform, **common).reseed(seed)
    val_loader, test_loader = (TensorLoader(images, labels, max(batch_size, 256), transform=data.test_transform,
                                            **common)
                               for images, labels in ((data.val_images, data.val_labels),
                                                      (data.test_images, data.test_labels)))
    return train_loader, val_loader, test_loader


def feature_loader(images, labels, data, device, batch_size=256):
    """An ordered, unaugmented loader (the data's test_transform): the one to cache features from."""
    return TensorLoader(images, labels, batch_size, device=device, mean=data.mean, std=data.std,
                        transform=data.test_transform)
