"""The fast CUDA path (skipped without a GPU): bf16 + channels_last training, host syncs per epoch, the uint8
cache on the GPU or in host memory, and CPU/GPU agreement of features and sweeps.

The first test also runs on the CPU, so the training task it uses is known to be learnable everywhere.
"""
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from finetune_helpers import bench
from finetune_helpers.augment import RandomResizedCropFlip
from finetune_helpers.data import TensorLoader
from finetune_helpers.sweeps import batched_head_sweep, head_sweep
from finetune_helpers.training import evaluate, extract_features, fit, make_optimizer, train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import blobs, tiny_net, toy_images  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _resnet18(num_classes, device, seed=0):
    """The benchmark's ResNet-18 (random weights, nothing to download), seeded."""
    torch.manual_seed(seed)
    return bench._resnet18(num_classes, device)


def _count_host_syncs(fn):
    """Run fn() with CUDA's sync debug mode on; return how many synchronising operations it made."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_fit_trains_resnet18_with_the_fast_path_on_its_device(device):
    model = _resnet18(2, device)
    dtypes = []
    model.layer1.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    images, labels = toy_images(64, size=32)
    train_loader = TensorLoader(images, labels, 16, shuffle=True, device=device)
    history = fit(model, train_loader, train_loader, lr=1e-3, num_epochs=4, bn_eval=False, progress=False)
    assert history.last["train_loss"] < history[0]["train_loss"], "training did not lower the loss"
    assert history.last["train_acc"] >= 0.9 and history.last["val_acc"] >= 0.75, history.column("val_acc")
    on_cuda = device == "cuda"
    assert set(dtypes) == {torch.bfloat16 if on_cuda else torch.float32}, "bf16 autocast on CUDA only"
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last) == on_cuda
    x, _ = next(iter(train_loader))
    assert x.is_contiguous(memory_format=torch.channels_last) == on_cuda and x.dtype == torch.float32


@cuda
def test_train_epoch_and_evaluate_sync_with_the_host_a_fixed_number_of_times():
    model = tiny_net(2).cuda()
    optimizer = make_optimizer(model.parameters(), 1e-3)
    images, labels = toy_images(96, size=16)

    def loader(num_batches):
        n = 16 * num_batches
        return TensorLoader(images[:n], labels[:n], 16, shuffle=True, device="cuda",
                            transform=RandomResizedCropFlip(12))

    def syncs(num_batches):
        train_loader, test_loader = loader(num_batches), loader(num_batches)
        return (_count_host_syncs(lambda: train_epoch(model, train_loader, optimizer)),
                _count_host_syncs(lambda: evaluate(model, test_loader)))

    syncs(1)  # lazy initialisation (optimizer state, cuDNN handles) happens once, not per step
    few, many = syncs(2), syncs(6)
    assert few == many, f"host syncs grow with the number of steps: {few} for 2 batches, {many} for 6"
    assert many[0] <= 2 and many[1] <= 1, f"expected only the final .item() calls, got {many}"


@cuda
def test_uint8_cache_on_the_gpu_or_in_host_memory_gives_the_same_batches():
    images, labels = toy_images(40, size=20)

    def loader(cache_on_device):
        return TensorLoader(images, labels, 16, shuffle=True, device="cuda", seed=3,
                            transform=RandomResizedCropFlip(16, seed=2), cache_on_device=cache_on_device)

    on_gpu, in_host, auto = loader(True), loader(False), loader(None)
    assert on_gpu.images.is_cuda and auto.images.is_cuda, "a small cache must live on the GPU"
    assert in_host.images.device.type == "cpu"
    for (x1, y1), (x2, y2) in zip(on_gpu, in_host, strict=True):
        assert x2.is_cuda and y2.is_cuda
        assert torch.equal(x1, x2) and torch.equal(y1, y2)



@cuda
def test_images_already_on_the_gpu_stay_there_even_when_memory_is_short(monkeypatch):
    images, labels = toy_images(8, size=8)
    monkeypatch.setattr("finetune_helpers.data.fits_on_device", lambda *args, **kwargs: False)
    assert TensorLoader(images, labels, device="cuda").images.device.type == "cpu"
    assert TensorLoader(images.cuda(), labels.cuda(), device="cuda").images.is_cuda


@cuda
def test_bf16_features_on_cuda_match_fp32_features_on_the_cpu():
    images, labels = toy_images(24, size=32)
    model = _resnet18(3, "cpu").eval()
    on_cpu, labels_cpu = extract_features(model, TensorLoader(images, labels, 8))
    on_gpu, labels_gpu = extract_features(model.cuda(), TensorLoader(images, labels, 8, device="cuda"))
    assert on_gpu.dtype == torch.float32 and on_gpu.shape == on_cpu.shape == (24, 512)
    assert torch.equal(labels_gpu.cpu(), labels_cpu)
    similarity = F.cosine_similarity(on_gpu.cpu(), on_cpu).min().item()
    assert similarity > 0.99, f"bf16 features drifted from fp32 ones: cosine similarity {similarity:.4f}"


@cuda
def test_batched_head_sweep_on_cuda_matches_one_by_one_and_the_cpu():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    train, test = blobs(70, dim=12, spread=2.5), blobs(40, dim=12, spread=2.5, noise_seed=1)
    on_cpu = batched_head_sweep(*train, *test, lrs, num_epochs=5, batch_size=16, seed=1)
    gpu_data = [t.cuda() for t in (*train, *test)]
    batched = batched_head_sweep(*gpu_data, lrs, num_epochs=5, batch_size=16, seed=1)
    one_by_one = head_sweep(*gpu_data, lrs, num_epochs=5, batch_size=16, seed=1)
    for lr in lrs:
        for other in (on_cpu, one_by_one):
            assert batched[lr].column("train_loss") == pytest.approx(other[lr].column("train_loss"), rel=1e-3), lr
            assert abs(batched[lr].last["val_acc"] - other[lr].last["val_acc"]) <= 1 / 40 + 1e-6, lr
