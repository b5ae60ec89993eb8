"""The full profile's photos: Oxford Flowers-102 downloaded by torchvision, decoded once into a uint8 tensor cache.

First run: `torchvision.datasets.Flowers102(root, split, download=True)` fetches the archive (~330 MB) and the
two .mat files; every JPEG is then decoded once (on the GPU when there is one), resized so its short side is
`cache_size` pixels, centre-cropped to a square and stored as one uint8 N×3×S×S tensor per split in
`<root>/flowers-102/cache/`. Later runs load those tensors in a second and never touch a JPEG again. Training
crops and flips the cached images on their device in batches (augment.py).
"""
import os
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .augment import CenterCrop, RandomResizedCropFlip
from .splits import ImageData, few_label_split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_ENV_VAR = "FINETUNE_DATA"
TRAIN_SPLIT = "train"  # 10 per class: the few-label training set is drawn from it
VAL_SPLIT = "val"      # 1,020 images (10 per class): the validation set, disjoint from the training draw
TEST_SPLIT = "test"    # 6,149 images: the held-out test set
DECODE_CHUNK = 128              # images decoded (and resized) per call


def data_root(root=None):
    """Where datasets live: `root`, else $FINETUNE_DATA, else ./data (git-ignored)."""
    return Path(root or os.environ.get(DATA_ENV_VAR) or "data")


def cache_size_for(image_size):
    """Side of the cached squares: 8/7 of the model's input (256 for 224), room for crops."""
    return int(round(image_size * 8 / 7))


def _resize_square(image, size):
    """uint8 C×H×W -> uint8 C×size×size: short side to `size` (antialiased bilinear), then centre crop."""
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
    x = F.interpolate(image[None].float(), size=new_hw, mode="bilinear", antialias=True, align_corners=False)
    x = CenterCrop(size)(x)[0]
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _decode_chunk(chunk, size, device):
    """Decode a list of JPEG byte tensors on `device` and return them resized, as uint8 on the CPU."""
    from torchvision.io import ImageReadMode, decode_jpeg
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
    return torch.stack([_resize_square(image, size) for image in images]).cpu()


def decode_images(encoded, size, device=None, desc="decode"):
    """JPEG byte tensors -> uint8 N×3×size×size (CPU), decoded on `device` (default: CUDA when available)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = torch.empty(len(encoded), 3, size, size, dtype=torch.uint8)
    with tqdm(total=len(encoded), desc=desc, unit="img") as bar:
        for start in range(0, len(encoded), DECODE_CHUNK):
            chunk = list(encoded[start:start + DECODE_CHUNK])
            try:
                out[start:start + len(chunk)] = _decode_chunk(chunk, size, device)
            except RuntimeError:  # e.g. a JPEG variant nvJPEG refuses: decode this chunk on the CPU instead
                if device.type == "cpu":
                    raise
                out[start:start + len(chunk)] = _decode_chunk(chunk, size, torch.device("cpu"))
            bar.update(len(chunk))
    return out


def read_bytes(path):
    """The raw bytes of a file as a 1-d uint8 tensor (what decode_jpeg takes)."""
    return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)


def _flowers(root, split):
    """torchvision's Flowers102 for `split`, downloading into `root` if needed; its loader just reads bytes."""
    from torchvision.datasets import Flowers102
    return Flowers102(str(root), split=split, download=True, loader=read_bytes)


def load_split(root, split, size, device=None):
    """(uint8 images N×3×size×size, int64 labels) of one Flowers-102 split, from the cache or decoded once."""
    cache = data_root(root) / "flowers-102" / "cache" / f"{split}_{size}px.pt"
    if cache.exists():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        return saved["images"], saved["labels"]
    dataset = _flowers(data_root(root), split)
    encoded, labels = zip(*(dataset[i] for i in range(len(dataset))))
    images = decode_images(encoded, size, device, desc=f"Flowers-102 {split}: decoding once")
    labels = torch.tensor(labels, dtype=torch.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"images": images, "labels": labels}, tmp)
    tmp.replace(cache)  # atomic: an interrupted run never leaves a half-written cache behind
    return images, labels


def load_flowers(root=None, labels_per_class=10, seed=0, image_size=224, device=None):
    """Oxford Flowers-102 as ImageData (full profile): few-label training draw, official val and test splits.

    `labels_per_class` training photos per class are drawn with `seed` from the official train split (10 per
    class); the official val split (1,020 photos) is the validation set and the test split (6,149) the test set.
    Images are cached at 8/7 × image_size; train_transform crops and flips them at random (scale 0.25–1),
    test_transform takes the central image_size square; normalisation is ImageNet's.
    """
    size = cache_size_for(image_size)
    pool_images, pool_labels = load_split(root, TRAIN_SPLIT, size, device)
    val_images, val_labels = load_split(root, VAL_SPLIT, size, device)
    test_images, test_labels = load_split(root, TEST_SPLIT, size, device)
    try:
        picks = few_label_split(pool_labels.numpy(), labels_per_class, seed)
    except ValueError as error:
        raise ValueError(f"Flowers-102 has {len(pool_labels)} labelled photos in its {TRAIN_SPLIT} split: "
                         f"{error}") from None
    picks = torch.as_tensor(picks)
    from torchvision.datasets import Flowers102
    num_classes = int(max(pool_labels.max(), val_labels.max(), test_labels.max())) + 1
    names = list(getattr(Flowers102, "classes", []))  # torchvision >= 0.22 names the 102 classes
    classes = names[:num_classes] if len(names) >= num_classes else [str(c) for c in range(num_classes)]
    return ImageData(train_images=pool_images[picks], train_labels=pool_labels[picks], val_images=val_images,
                     val_labels=val_labels, test_images=test_images, test_labels=test_labels, classes=classes,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     train_transform=RandomResizedCropFlip(image_size, seed=seed),
                     test_transform=CenterCrop(image_size))
