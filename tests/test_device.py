"""Unit tests for finetune_helpers.device: device choice and seeding."""
import random
import types

import numpy as np
import pytest
import torch

from finetune_helpers import device as device_module
from finetune_helpers.device import get_device, set_seed, synchronize


def _fake_backends(monkeypatch, cuda, mps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends, "mps", types.SimpleNamespace(is_available=lambda: mps), raising=False)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _fake_backends(monkeypatch, cuda, mps)
    result = get_device()
    assert isinstance(result, torch.device)
    assert result.type == expected


def test_get_device_without_mps_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends, "mps", None, raising=False)
    assert get_device().type == "cpu"


def test_get_device_matches_this_machine():
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_set_seed_makes_all_three_rngs_repeat():
    assert set_seed(123) == 123
    first = _draws()
    _draws()  # move the RNGs on
    set_seed(123)
    assert _draws() == first


def test_set_seed_different_seeds_differ():
    set_seed(0)
    a = _draws()
    set_seed(1)
    b = _draws()
    assert all(x != y for x, y in zip(a, b)), "each RNG must depend on the seed"


def test_set_seed_default_is_zero():
    assert set_seed() == 0
    a = _draws()
    set_seed(0)
    assert _draws() == a


def test_set_seed_seeds_each_library():
    set_seed(7)
    assert torch.initial_seed() == 7
    random.seed(7)
    expected_py = random.random()
    np.random.seed(7)
    expected_np = np.random.rand()
    set_seed(7)
    assert random.random() == expected_py
    assert np.random.rand() == expected_np
    assert device_module.set_seed is set_seed


def test_synchronize_waits_for_cuda_only(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    synchronize("cpu")
    synchronize(torch.device("cpu"))
    assert waited == [], "nothing to wait for on the CPU (and no CUDA call on a machine without it)"
    synchronize("cuda:0")
    assert waited == ["cuda:0"], "wait on the device the timer measures"
