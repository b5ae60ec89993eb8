"""Batch augmentation (finetune_helpers.augment): crops land where they should, on the CPU and on CUDA."""
import pytest
import torch

from finetune_helpers.augment import CenterCrop, RandomResizedCropFlip, crop_boxes, resized_crop
from finetune_helpers.data import TensorLoader

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def ramp(batch=2, height=8, width=8):
    """A batch whose pixels all differ: easy to see which pixel went where."""
    x = torch.arange(batch * 3 * height * width, dtype=torch.float32).view(batch, 3, height, width)
    return x / x.max()


def box(cx, cy, w, h, flip, n=2):
    return tuple(torch.full((n,), float(v)) for v in (cx, cy, w, h, flip))


def test_full_box_is_the_identity():
    x = ramp()
    torch.testing.assert_close(resized_crop(x, box(0, 0, 1, 1, 1), 8), x)


def test_flip_sign_mirrors_horizontally():
    x = ramp()
    torch.testing.assert_close(resized_crop(x, box(0, 0, 1, 1, -1), 8), x.flip(-1))


def test_quadrant_box_crops_exactly_that_quadrant():
    x = ramp()
    top_left = resized_crop(x, box(-0.25, -0.25, 0.5, 0.5, 1), 4)
    torch.testing.assert_close(top_left, x[..., :4, :4])
    bottom_right = resized_crop(x, box(0.25, 0.25, 0.5, 0.5, 1), 4)
    torch.testing.assert_close(bottom_right, x[..., 4:, 4:])


def test_boxes_stay_inside_the_image_and_respect_the_ranges():
    cx, cy, w, h, flip = crop_boxes(4000, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3),
                                    generator=torch.Generator().manual_seed(0))
    assert (cx.abs() + w / 2 <= 0.5 + 1e-6).all() and (cy.abs() + h / 2 <= 0.5 + 1e-6).all()
    assert (w <= 1).all() and (h <= 1).all()
    assert (w * h <= 1 + 1e-6).all() and (w * h >= 0.25 - 1e-6).all()
    aspect = w / h
    unclamped = (w < 1) & (h < 1)
    assert (aspect[unclamped] >= 3 / 4 - 1e-5).all() and (aspect[unclamped] <= 4 / 3 + 1e-5).all()
    assert set(flip.tolist()) == {-1.0, 1.0}
    assert 0.4 < (flip > 0).float().mean() < 0.6
    assert w.std() > 0.05 and cx.std() > 0.01, "boxes should vary from sample to sample"


@pytest.mark.parametrize("scale, ratio", [((0.0, 1.0), (0.75, 1.33)), ((0.5, 1.5), (0.75, 1.33)),
                                          ((0.6, 0.5), (0.75, 1.33)), ((0.5, 1.0), (1.5, 1.0))])
def test_bad_ranges_are_refused(scale, ratio):
    with pytest.raises(ValueError, match="scale|ratio"):
        RandomResizedCropFlip(8, scale=scale, ratio=ratio)


def test_random_resized_crop_flip_shapes_range_and_seed():
    x = torch.rand(16, 3, 20, 20)
    out = RandomResizedCropFlip(12, seed=3)(x)
    assert out.shape == (16, 3, 12, 12) and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1, "bilinear resampling of [0, 1] images stays in [0, 1]"
    torch.testing.assert_close(RandomResizedCropFlip(12, seed=3)(x), out)
    assert not torch.allclose(RandomResizedCropFlip(12, seed=4)(x), out)
    same = x[:1].expand(16, -1, -1, -1)
    crops = RandomResizedCropFlip(12, seed=0)(same)
    assert not torch.allclose(crops[0], crops[1]), "each sample in a batch gets its own crop"


def test_random_resized_crop_flip_refuses_uint8():
    with pytest.raises(ValueError, match="float"):
        RandomResizedCropFlip(8)(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_center_crop_is_the_central_window():
    x = ramp(height=10, width=12)
    torch.testing.assert_close(CenterCrop(6)(x), x[..., 2:8, 3:9])
    with pytest.raises(ValueError, match="smaller"):
        CenterCrop(11)(x)


def test_transforms_plug_into_tensor_loader():
    images = torch.randint(0, 256, (10, 3, 20, 20), dtype=torch.uint8)
    loader = TensorLoader(images, torch.arange(10), batch_size=4, shuffle=True,
                          transform=RandomResizedCropFlip(16), mean=(0.5,) * 3, std=(0.25,) * 3)
    shapes = [tuple(x.shape) for x, _ in loader]
    assert shapes == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]


@cuda
def test_cuda_and_cpu_draw_the_same_crops():
    x = torch.rand(8, 3, 40, 40)
    cpu = RandomResizedCropFlip(32, seed=1)(x)
    gpu = RandomResizedCropFlip(32, seed=1)(x.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(CenterCrop(32)(x.cuda()).cpu(), CenterCrop(32)(x))
