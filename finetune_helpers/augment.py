"""Batch augmentation on the images' own device: random resized crop + flip per sample, and a centre crop.

The tutorial-style pipeline augments one PIL image at a time in DataLoader workers; here a whole float batch
(B×3×H×W, values in [0, 1]) is cropped, resized and flipped by one `affine_grid` + `grid_sample` call, so the
same code runs on the CPU and, much faster, on the GPU where the uint8 image cache already lives.
"""
import math

import torch
from torch.nn import functional as F


def crop_boxes(batch_size, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), generator=None):
    """Random crop boxes as (cx, cy, w, h) fractions of the image side, plus flip signs (±1), each of length B.

    The area fraction is uniform in `scale` and the aspect ratio log-uniform in `ratio`, as in torchvision's
    RandomResizedCrop; a box that would not fit is shrunk to fit (instead of torchvision's retry loop) so the
    whole batch is drawn in one go.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1 (fractions of the image area), got {scale}.")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < low <= high (width / height), got {ratio}.")
    u = torch.rand(batch_size, 5, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (u[:, 2] - 0.5) * (1 - w)  # centre in [-(1-w)/2, (1-w)/2]: the box stays inside the image
    cy = (u[:, 3] - 0.5) * (1 - h)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    return cx, cy, w, h, flip


def resized_crop(images, boxes, size):
    """Crop each image to its box (cx, cy, w, h, flip from `crop_boxes`) and resize to size×size, bilinearly."""
    # one non-blocking copy: a blocking host-to-GPU copy would make the CPU wait for the GPU queue every batch
    cx, cy, w, h, flip = torch.stack(boxes).to(images.device, images.dtype, non_blocking=images.is_cuda)
    theta = torch.zeros(len(images), 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = w * flip      # normalised coordinates span [-1, 1], so a fraction w of the side is scale w
    theta[:, 0, 2] = 2 * cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * cy
    grid = F.affine_grid(theta, [len(images), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class RandomResizedCropFlip:
    """Train-time augmentation of a float batch: per-sample random resized crop to `size`, then random h-flip.

    Random numbers come from a CPU generator seeded with `seed`, so a run repeats exactly and CPU and GPU draw
    the same boxes; the crop itself runs on the batch's device.
    """

    def __init__(self, size, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), seed=0):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        crop_boxes(1, self.scale, self.ratio)  # validate the ranges now, not at the first batch
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images):
        """Augment a B×C×H×W float batch; returns B×C×size×size."""
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(f"Expected a float batch B×C×H×W, got {images.dim()}-d {images.dtype}.")
        boxes = crop_boxes(len(images), self.scale, self.ratio, self.generator)
        return resized_crop(images, boxes, self.size)

    def __repr__(self):
        ratio = tuple(round(r, 3) for r in self.ratio)
        return f"RandomResizedCropFlip(size={self.size}, scale={self.scale}, ratio={ratio})"


class CenterCrop:
    """Test-time transform: the central size×size window of every image in the batch (no resampling)."""

    def __init__(self, size):
        self.size = int(size)

    def __call__(self, images):
        """Crop a B×C×H×W batch (H, W >= size) to B×C×size×size."""
        height, width = images.shape[-2:]
        if height < self.size or width < self.size:
            raise ValueError(f"Images are {height}×{width}, smaller than the {self.size}-pixel centre crop.")
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return images[..., top:top + self.size, left:left + self.size]

    def __repr__(self):
        return f"CenterCrop(size={self.size})"
