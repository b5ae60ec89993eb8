"""The full profile's data path, offline: torchvision's real Flowers102 code on a small generated copy of its
on-disk format (jpg/ + imagelabels.mat + setid.mat), the uint8 cache, and ResNet-18 weights from $TORCH_HOME."""
import os
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import finetune_helpers.photos as photos
from finetune_helpers import load_backbone, load_data, make_loaders
from finetune_helpers.augment import CenterCrop, RandomResizedCropFlip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import COLOURS, write_fake_flowers  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def flowers_root(tmp_path, monkeypatch):
    """A generated Flowers-102 folder; the md5 check of the .mat files accepts it; any download fails loudly."""
    import torchvision.datasets.flowers102 as module
    monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))

    def no_network(*args, **kwargs):
        raise AssertionError("the test tried to download")

    monkeypatch.setattr(module, "download_and_extract_archive", no_network)
    monkeypatch.setattr(module, "download_url", no_network)
    write_fake_flowers(tmp_path)
    return tmp_path


def dominant_class(images):
    """Class whose colour is closest to each image's mean colour."""
    means = images.float().mean(dim=(2, 3))
    return torch.cdist(means, torch.tensor(COLOURS, dtype=torch.float32)).argmin(1)


def test_the_real_torchvision_dataset_reads_the_generated_folder(flowers_root):
    dataset = photos._flowers(flowers_root, "train")
    assert len(dataset) == 2 * len(COLOURS)
    encoded, label = dataset[0]
    assert encoded.dtype == torch.uint8 and encoded.dim() == 1 and label == 0


def test_load_flowers_shapes_labels_and_pixels(flowers_root):
    data = photos.load_flowers(root=flowers_root, labels_per_class=2, seed=0, image_size=32)
    size = photos.cache_size_for(32)
    assert size > 32
    for images, labels, per_class in ((data.train_images, data.train_labels, 2),
                                      (data.val_images, data.val_labels, 2), (data.test_images, data.test_labels, 3)):
        assert images.shape == (3 * per_class, 3, size, size) and images.dtype == torch.uint8
        assert torch.bincount(labels).tolist() == [per_class] * 3
        colour = (images[:, 0] != images[:, 1]).flatten(1).any(1)  # the grey photo has no dominant colour
        assert colour.sum() >= len(images) - 1
        assert torch.equal(dominant_class(images[colour]), labels[colour]), "images and labels out of step"
    assert data.classes == torchvision.datasets.Flowers102.classes[:3] and data.num_classes == 3
    assert data.mean == photos.IMAGENET_MEAN and data.std == photos.IMAGENET_STD
    assert isinstance(data.train_transform, RandomResizedCropFlip) and data.train_transform.size == 32
    assert isinstance(data.test_transform, CenterCrop) and data.test_transform.size == 32


def test_grey_jpegs_are_decoded_to_three_equal_channels(flowers_root):
    images, _ = photos.load_split(flowers_root, "train", 20)
    grey = images[0].float()
    assert images.shape[1] == 3 and torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])


def test_decoding_happens_once_then_the_cache_is_used(flowers_root):
    first = photos.load_flowers(root=flowers_root, labels_per_class=2, seed=0, image_size=32)
    cache = flowers_root / "flowers-102" / "cache"
    assert sorted(p.name for p in cache.iterdir()) == ["test_37px.pt", "train_37px.pt", "val_37px.pt"]
    for jpg in (flowers_root / "flowers-102" / "jpg").iterdir():
        jpg.unlink()  # with the JPEGs gone, only the cache can answer
    second = photos.load_flowers(root=flowers_root, labels_per_class=2, seed=0, image_size=32)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_images, second.test_images)


def _distinct(*image_sets):
    """True when no image appears twice across the sets (every generated photo has its own noise)."""
    everything = torch.cat(image_sets).flatten(1)
    return len(torch.unique(everything, dim=0)) == len(everything)


def test_seeds_draw_training_photos_from_the_train_split_only(flowers_root):
    picks = {seed: photos.load_flowers(root=flowers_root, labels_per_class=1, seed=seed, image_size=32)
             for seed in range(4)}
    assert torch.equal(picks[0].train_images, photos.load_flowers(
        root=flowers_root, labels_per_class=1, seed=0, image_size=32).train_images)
    assert any(not torch.equal(picks[0].train_images, picks[s].train_images) for s in (1, 2, 3))
    train_split, _ = photos.load_split(flowers_root, "train", photos.cache_size_for(32))
    val_split, _ = photos.load_split(flowers_root, "val", photos.cache_size_for(32))
    for data in picks.values():
        assert torch.equal(data.val_images, val_split), "validation is the official val split, whatever the seed"
        assert all((train_split == image).all(dim=(1, 2, 3)).any() for image in data.train_images)
        assert _distinct(data.train_images, data.val_images, data.test_images), "no photo in two splits"


def test_too_many_labels_per_class_is_a_clear_error(flowers_root):
    with pytest.raises(ValueError, match=r"train split: labels_per_class=3 is impossible.*pick 1\.\.2"):
        photos.load_flowers(root=flowers_root, labels_per_class=3, image_size=32)


def test_data_root_comes_from_the_environment(flowers_root, monkeypatch):
    monkeypatch.setenv(photos.DATA_ENV_VAR, str(flowers_root))
    assert photos.data_root() == flowers_root
    data = photos.load_flowers(labels_per_class=1, image_size=32)
    assert len(data.train_labels) == 3
    monkeypatch.delenv(photos.DATA_ENV_VAR)
    assert str(photos.data_root()) == "data"


def test_full_profile_load_data_and_loaders(flowers_root):
    data = load_data("full", labels_per_class=2, root=flowers_root)
    assert data.train_images.shape[-1] == photos.cache_size_for(224) == 256
    train_loader, val_loader, test_loader = make_loaders(data, batch_size=4)
    x, y = next(iter(train_loader))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    mean = torch.tensor(photos.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(photos.IMAGENET_STD).view(1, 3, 1, 1)
    for loader, images in ((val_loader, data.val_images), (test_loader, data.test_images)):
        x, y = next(iter(loader))
        assert x.shape == (len(images), 3, 224, 224)
        torch.testing.assert_close(x, (CenterCrop(224)(images.float() / 255) - mean) / std)


def test_resnet18_imagenet_weights_load_offline_from_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("the test tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    torch.manual_seed(0)
    weights = torchvision.models.resnet18().state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    assert torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.endswith("/resnet18-f37072fd.pth")
    torch.save(weights, checkpoints / "resnet18-f37072fd.pth")
    model = load_backbone("resnet18")
    assert not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), f"{name} did not come from the checkpoint file"


@cuda
def test_gpu_decoding_matches_cpu_decoding(flowers_root):
    dataset = photos._flowers(flowers_root, "test")
    encoded = [dataset[i][0] for i in range(len(dataset))]
    on_cpu = photos.decode_images(encoded, 40, device="cpu")
    on_gpu = photos.decode_images(encoded, 40, device="cuda")
    assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.uint8
    assert (on_gpu.float() - on_cpu.float()).abs().mean() < 3, "nvJPEG and libjpeg should agree closely"
