"""Unit tests for finetune_helpers.data: the digits data (train/val/test), the few-label split, TensorLoader,
make_loaders and feature_loader."""
import dataclasses
import re

import numpy as np
import pytest
import torch

from finetune_helpers.augment import RandomResizedCropFlip
from finetune_helpers.data import (DIGITS_TEST_SIZE, DIGITS_VAL_PER_CLASS, TensorLoader, feature_loader,
                                   fits_on_device, load_data, make_loaders)
from finetune_helpers.splits import ImageData, few_label_split
from finetune_helpers.profiles import PROFILES


@pytest.fixture(scope="module")
def digits():
    """The quick profile's data with its defaults (seed 0, 20 labels per class)."""
    return load_data("quick")


@pytest.fixture(scope="module")
def digits_seed1():
    return load_data("quick", seed=1)


# ------------------------------------------------------------------ load_data (quick profile: digits)

def test_load_data_shapes_dtypes_and_classes(digits):
    assert isinstance(digits, ImageData)
    assert digits.train_images.shape == (200, 3, 64, 64)
    assert digits.test_images.shape == (DIGITS_TEST_SIZE, 3, 64, 64) == (500, 3, 64, 64)
    assert digits.val_images.shape == (10 * DIGITS_VAL_PER_CLASS, 3, 64, 64) == (200, 3, 64, 64)
    assert digits.train_images.dtype == digits.val_images.dtype == digits.test_images.dtype == torch.uint8
    assert digits.train_labels.dtype == digits.val_labels.dtype == digits.test_labels.dtype == torch.int64
    assert torch.bincount(digits.val_labels, minlength=10).tolist() == [20] * 10
    assert digits.train_labels.shape == (200,) and digits.test_labels.shape == (500,)
    assert digits.classes == [str(d) for d in range(10)]
    assert digits.num_classes == 10
    assert digits.mean == (0.5, 0.5, 0.5) and digits.std == (0.5, 0.5, 0.5)
    assert digits.train_transform is None and digits.test_transform is None


def test_images_are_grey_digits_using_the_full_range(digits):
    images = digits.train_images
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert images.min() == 0 and images.max() == 255
    assert digits.test_labels.min() == 0 and digits.test_labels.max() == 9


def test_labels_match_images(digits):
    """A nearest-centroid classifier fit on the 200 training images must beat chance by far on the test set."""
    train = digits.train_images[:, 0].flatten(1).float()
    test = digits.test_images[:, 0].flatten(1).float()
    centroids = torch.stack([train[digits.train_labels == c].mean(0) for c in range(10)])
    predicted = torch.cdist(test, centroids).argmin(1)
    accuracy = (predicted == digits.test_labels).float().mean().item()
    assert accuracy > 0.8, f"labels look scrambled: nearest-centroid accuracy {accuracy:.2f}"


def test_few_label_split_has_exact_count_per_class(digits):
    assert torch.bincount(digits.train_labels, minlength=10).tolist() == [20] * 10


def test_test_split_contains_every_class(digits):
    counts = torch.bincount(digits.test_labels, minlength=10)
    assert counts.sum() == 500 and (counts > 20).all()


def _distinct(*image_sets):
    """True when no image appears twice across the sets (the 1,797 source digits are all different)."""
    everything = torch.cat(image_sets)[:, 0].flatten(1).numpy()
    return len(np.unique(everything, axis=0)) == len(everything)


def test_train_val_and_test_are_disjoint(digits):
    """Any image shared between two splits would be a leaked example."""
    assert _distinct(digits.train_images, digits.val_images, digits.test_images)
    assert not _distinct(digits.train_images, digits.train_images[:1]), "the check itself sees a duplicate"


@pytest.mark.parametrize("seed, labels_per_class", [(1, 20), (3, 5), (0, 50)])
def test_validation_set_is_fixed_whatever_the_training_draw(digits, seed, labels_per_class):
    other = load_data("quick", labels_per_class=labels_per_class, seed=seed)
    assert torch.equal(other.val_images, digits.val_images) and torch.equal(other.val_labels, digits.val_labels)
    assert torch.equal(other.test_images, digits.test_images)
    assert _distinct(other.train_images, other.val_images, other.test_images)


def test_same_seed_same_split(digits):
    again = load_data("quick", seed=0)
    assert torch.equal(again.train_images, digits.train_images)
    assert torch.equal(again.train_labels, digits.train_labels)
    assert torch.equal(again.test_images, digits.test_images)
    assert torch.equal(again.val_images, digits.val_images)


def test_different_seed_different_train_split_same_test_split(digits, digits_seed1):
    assert not torch.equal(digits_seed1.train_images, digits.train_images)
    assert torch.bincount(digits_seed1.train_labels, minlength=10).tolist() == [20] * 10
    assert torch.equal(digits_seed1.test_images, digits.test_images)
    assert torch.equal(digits_seed1.test_labels, digits.test_labels)
    # seed 1 must not leak test images into training either
    everything = torch.cat([digits_seed1.train_images, digits.test_images])[:, 0].flatten(1).numpy()
    assert len(np.unique(everything, axis=0)) == len(everything)


def test_labels_per_class_and_profile_object(digits):
    data = load_data(PROFILES["quick"], labels_per_class=3, seed=0)
    assert torch.bincount(data.train_labels, minlength=10).tolist() == [3] * 10
    assert torch.equal(data.test_images, digits.test_images)


def test_profile_image_size_is_used():
    small = dataclasses.replace(PROFILES["quick"], image_size=32)
    data = load_data(small, labels_per_class=1)
    assert data.train_images.shape == (10, 3, 32, 32) and data.test_images.shape == (500, 3, 32, 32)


def test_default_profile_comes_from_env(monkeypatch):
    monkeypatch.setenv("FINETUNE_PROFILE", "quick")
    data = load_data(labels_per_class=2)
    assert data.train_images.shape == (20, 3, 64, 64)


def test_too_many_labels_per_class_names_the_limit():
    with pytest.raises(ValueError, match="labels_per_class=10000") as err:
        load_data("quick", labels_per_class=10000)
    match = re.search(r"1\.\.(\d+)", str(err.value))
    assert match, f"the error should name the valid range, got: {err.value}"
    limit = int(match.group(1))
    # the named limit really is the limit: it works, one more does not
    data = load_data("quick", labels_per_class=limit)
    assert torch.bincount(data.train_labels, minlength=10).min() == limit
    with pytest.raises(ValueError, match=f"1..{limit}"):
        load_data("quick", labels_per_class=limit + 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_non_positive_labels_per_class_is_refused(bad):
    with pytest.raises(ValueError, match="labels_per_class"):
        load_data("quick", labels_per_class=bad)


# ------------------------------------------------------------------ few_label_split

def test_few_label_split_counts_sorted_unique_and_excludes():
    labels = np.repeat(np.arange(4), 10)  # 4 classes x 10
    exclude = np.arange(0, 40, 5)
    picks = few_label_split(labels, 3, seed=0, exclude=exclude)
    assert picks.tolist() == sorted(set(picks.tolist()))
    assert np.bincount(labels[picks]).tolist() == [3, 3, 3, 3]
    assert not set(picks.tolist()) & set(exclude.tolist())


def test_few_label_split_seeded():
    labels = np.repeat(np.arange(3), 50)
    assert np.array_equal(few_label_split(labels, 5, seed=4), few_label_split(labels, 5, seed=4))
    assert not np.array_equal(few_label_split(labels, 5, seed=4), few_label_split(labels, 5, seed=5))


def test_few_label_split_limit_counts_the_exclusions():
    labels = np.repeat(np.arange(2), 5)
    assert len(few_label_split(labels, 5)) == 10
    with pytest.raises(ValueError, match=r"smallest class has 4 .*1\.\.4"):
        few_label_split(labels, 5, exclude=[0])


# ------------------------------------------------------------------ TensorLoader

def _images(n=10, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def test_loader_batches_without_shuffle_keep_order():
    images, labels = _images(10), torch.arange(10)
    loader = TensorLoader(images, labels, batch_size=4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    for x, _ in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 4, 4)


def test_loader_normalises_with_default_mean_and_std():
    images = _images(5)
    x, _ = next(iter(TensorLoader(images, torch.zeros(5, dtype=torch.long), batch_size=5)))
    expected = (images.float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(x, expected)
    assert -1 <= x.min() and x.max() <= 1


def test_loader_normalises_per_channel():
    images = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    images[:, 1] = 0
    loader = TensorLoader(images, torch.zeros(2, dtype=torch.long), mean=(0.5, 0.2, 0.0), std=(0.5, 0.1, 2.0))
    x, _ = next(iter(loader))
    assert torch.allclose(x[:, 0], torch.tensor(1.0))
    assert torch.allclose(x[:, 1], torch.tensor(-2.0))
    assert torch.allclose(x[:, 2], torch.tensor(0.5))


def test_loader_transform_sees_unit_range_and_runs_before_normalising():
    images = _images(6)
    seen = []

    def invert(x):
        seen.append((x.min().item(), x.max().item()))
        return 1 - x
    x, _ = next(iter(TensorLoader(images, torch.zeros(6, dtype=torch.long), batch_size=6, transform=invert)))
    assert 0 <= seen[0][0] and seen[0][1] <= 1
    torch.testing.assert_close(x, ((1 - images.float() / 255) - 0.5) / 0.5)


def test_loader_does_not_modify_the_images():
    images = _images(8)
    before = images.clone()
    for _ in TensorLoader(images, torch.zeros(8, dtype=torch.long), batch_size=3, transform=lambda x: x.mul_(0)):
        pass
    assert torch.equal(images, before)


def test_loader_labels_stay_with_their_images_when_shuffled():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 2, 2).contiguous()
    labels = torch.arange(20) * 10
    loader = TensorLoader(images, labels, batch_size=6, shuffle=True, mean=(0,) * 3, std=(1,) * 3)
    for x, y in loader:
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long() * 10, y)


def _epoch_order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_shuffle_is_a_permutation_and_seeded():
    labels = torch.arange(50)
    make = lambda seed: TensorLoader(_images(50), labels, batch_size=8, shuffle=True, seed=seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    first_a, first_b, first_c = _epoch_order(a), _epoch_order(b), _epoch_order(c)
    assert sorted(first_a) == list(range(50)), "every example exactly once per epoch"
    assert first_a == first_b, "same seed, same order"
    assert first_a != first_c, "different seed, different order"
    assert first_a != list(range(50)), "shuffle=True must shuffle"
    second_a = _epoch_order(a)
    assert sorted(second_a) == list(range(50)) and second_a != first_a, "a new order each epoch"
    assert _epoch_order(b) == second_a, "the sequence of epochs repeats too"


def test_shuffle_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(TensorLoader(_images(10), torch.arange(10), batch_size=3, shuffle=True))
    assert torch.equal(torch.rand(3), expected)


def test_drop_last():
    loader = TensorLoader(_images(10), torch.arange(10), batch_size=4, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert all(len(y) == 4 for _, y in batches)
    exact = TensorLoader(_images(8), torch.arange(8), batch_size=4, drop_last=True)
    assert len(exact) == len(list(exact)) == 2


def test_batch_larger_than_data():
    loader = TensorLoader(_images(3), torch.arange(3), batch_size=32)
    assert len(loader) == 1 and len(next(iter(loader))[1]) == 3
    assert len(TensorLoader(_images(3), torch.arange(3), batch_size=32, drop_last=True)) == 0


def test_loader_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="10 images, 9 labels"):
        TensorLoader(_images(10), torch.arange(9))


def test_loader_rejects_empty_data():
    with pytest.raises(ValueError, match="at least one"):
        TensorLoader(_images(0), torch.arange(0))


def test_loader_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        TensorLoader(_images(4).float() / 255, torch.arange(4))


def test_loader_puts_tensors_on_its_device():
    loader = TensorLoader(_images(4), torch.arange(4), device="cpu")
    assert loader.device == torch.device("cpu")
    x, y = next(iter(loader))
    assert x.device.type == y.device.type == "cpu"


def test_cache_fits_anywhere_but_a_nearly_full_gpu(monkeypatch):
    """A GPU keeps the uint8 cache only while it takes at most half of the free memory; other devices always."""
    assert fits_on_device(10 ** 15, "cpu") and fits_on_device(10 ** 15, torch.device("cpu"))
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: asked.append(device) or (8e9, 80e9))
    assert fits_on_device(4e9, "cuda") and not fits_on_device(4e9 + 1, "cuda")
    assert fits_on_device(6e9, "cuda:0", fraction=0.75) and not fits_on_device(7e9, "cuda:0", fraction=0.75)
    assert asked[-1] == torch.device("cuda:0"), "free memory must be read on the loader's own GPU"


def test_loader_with_the_cache_kept_off_the_device_yields_the_same_batches():
    images, labels = _images(10), torch.arange(10)
    flip = lambda x: x.flip(-1)  # noqa: E731
    kept = TensorLoader(images, labels, 4, shuffle=True, transform=flip, seed=5, cache_on_device=False)
    moved = TensorLoader(images, labels, 4, shuffle=True, transform=flip, seed=5, cache_on_device=True)
    for (x1, y1), (x2, y2) in zip(kept, moved, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert kept.images.device.type == "cpu"


# ------------------------------------------------------------------ make_loaders

def test_make_loaders(digits):
    data = ImageData(train_images=digits.train_images[:40], train_labels=digits.train_labels[:40],
                     val_images=digits.val_images[:100], val_labels=digits.val_labels[:100],
                     test_images=digits.test_images[:300], test_labels=digits.test_labels[:300],
                     classes=digits.classes, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
                     train_transform=lambda x: x.flip(-1), test_transform=lambda x: x * 0)
    train_loader, val_loader, test_loader = make_loaders(data, batch_size=16, seed=3)
    assert (train_loader.batch_size, train_loader.shuffle, train_loader.drop_last) == (16, True, False)
    assert (val_loader.batch_size, val_loader.shuffle) == (test_loader.batch_size, test_loader.shuffle) == (256, False)
    assert len(train_loader) == 3 and len(val_loader) == 1 and len(test_loader) == 2
    assert train_loader.transform is data.train_transform
    assert val_loader.transform is test_loader.transform is data.test_transform
    # val and test loaders: unshuffled, their transform, then the data's normalisation
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    for loader, labels in ((val_loader, data.val_labels), (test_loader, data.test_labels[:256])):
        x, y = next(iter(loader))
        assert torch.equal(y, labels)
        torch.testing.assert_close(x, (0 - mean) / std * torch.ones_like(x))
    # train loader: shuffled with `seed`, the train transform, the same normalisation
    reference = TensorLoader(data.train_images, data.train_labels, 16, shuffle=True, seed=3)
    assert _epoch_order(train_loader) == _epoch_order(reference)
    x, y = next(iter(make_loaders(data, batch_size=16, seed=3)[0]))
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:16]
    expected = (data.train_images[idx].float().div(255).flip(-1) - mean) / std
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, data.train_labels[idx])


def test_make_loaders_keeps_large_test_batches(digits):
    train_loader, val_loader, test_loader = make_loaders(digits, batch_size=512)
    assert train_loader.batch_size == val_loader.batch_size == test_loader.batch_size == 512
    assert len(test_loader) == len(val_loader) == 1


# ------------------------------------------------------------------ reseed

def _augmented(seed=0):
    """A shuffled loader whose transform draws random crops from its own generator."""
    images = _images(24, size=12)
    return TensorLoader(images, torch.arange(24), batch_size=8, shuffle=True, seed=seed,
                        transform=RandomResizedCropFlip(8, seed=seed))


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    return all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))


def test_reseed_repeats_the_batches_and_the_augmentation():
    loader = _augmented(seed=0)
    first = _epoch(loader)
    second = _epoch(loader)
    assert not _same(first, second), "a new order and new crops every epoch"
    assert loader.reseed(0) is loader
    assert _same(_epoch(loader), first), "reseed(0) restarts both the order and the crops"
    loader.generator.manual_seed(0)  # the order alone is not enough: the crops continue from where they were
    assert not _same(_epoch(loader), first)
    assert _same(_epoch(_augmented(seed=5).reseed(0)), first), "reseed overrides the seeds given at construction"


def test_reseed_without_a_random_transform():
    loader = TensorLoader(_images(12), torch.arange(12), batch_size=4, shuffle=True, transform=lambda x: x)
    first = _epoch_order(loader)
    assert _epoch_order(loader.reseed(0)) == first


def test_make_loaders_reseeds_the_shared_augmentation(digits):
    """Two make_loaders calls with one seed give the same batches and crops, even after the first was used."""
    data = dataclasses.replace(digits, train_transform=RandomResizedCropFlip(48, seed=9))
    first = _epoch(make_loaders(data, batch_size=64, seed=2)[0])
    assert _same(_epoch(make_loaders(data, batch_size=64, seed=2)[0]), first)
    assert not _same(_epoch(make_loaders(data, batch_size=64, seed=3)[0]), first)


# ------------------------------------------------------------------ feature_loader

def test_feature_loader_is_ordered_unaugmented_and_normalised(digits):
    data = dataclasses.replace(digits, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
                               train_transform=lambda x: x.flip(-1), test_transform=lambda x: x[..., 2:-2, 2:-2])
    loader = feature_loader(data.train_images, data.train_labels, data, "cpu")
    assert loader.batch_size == 256 and not loader.shuffle and loader.transform is data.test_transform
    x, y = next(iter(loader))
    assert torch.equal(y, data.train_labels)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (data.train_images[..., 2:-2, 2:-2].float() / 255 - mean) / std)
    assert _epoch_order(loader) == _epoch_order(loader), "the same order every pass"
    assert len(feature_loader(data.val_images, data.val_labels, data, "cpu", batch_size=64)) == 4
