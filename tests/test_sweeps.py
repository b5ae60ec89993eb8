"""Unit tests for finetune_helpers.sweeps: LR sweeps (one by one and batched), the LR finder and its suggestion."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from finetune_helpers.data import TensorLoader
from finetune_helpers.freezing import freeze_all_but_head, snapshot
from finetune_helpers.augment import RandomResizedCropFlip
from finetune_helpers.sweeps import batched_head_sweep, best_lr, head_sweep, lr_finder, lr_sweep, suggest_lr
from finetune_helpers.training import History, train_head

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import blobs, tiny_net, toy_images, toy_loaders  # noqa: E402

LRS = [1e-4, 1e-3, 1e-2, 1e-1]


@pytest.fixture(scope="module")
def features():
    """Cached-feature stand-ins: 3 overlapping classes (so accuracies are not all 1.0), 70 train / 40 test."""
    train = blobs(70, dim=12, seed=0, spread=2.5)
    test = blobs(40, dim=12, seed=0, spread=2.5, noise_seed=1)
    return (*train, *test)


# ------------------------------------------------------------------ head_sweep vs batched_head_sweep

def test_head_sweep_one_history_per_lr(features):
    results = head_sweep(*features, LRS, num_epochs=3, batch_size=16)
    assert list(results) == LRS
    for history in results.values():
        assert isinstance(history, History) and history.column("epoch") == [1, 2, 3]
    finals = [results[lr].last["train_loss"] for lr in LRS]
    assert len(set(finals)) == len(LRS), "each lr must give its own run"


def test_head_sweep_equals_train_head_per_lr(features):
    results = head_sweep(*features, [1e-2], num_epochs=2, batch_size=16, seed=3)
    torch.manual_seed(3)
    head = nn.Linear(12, 3)
    expected = train_head(head, *features, lr=1e-2, num_epochs=2, batch_size=16, seed=3)
    assert results[1e-2].column("train_loss") == expected.column("train_loss")


@pytest.mark.parametrize("batch_size", [16, 70])
def test_batched_head_sweep_equals_head_sweep(features, batch_size):
    one_by_one = head_sweep(*features, LRS, num_epochs=6, batch_size=batch_size, seed=1)
    batched = batched_head_sweep(*features, LRS, num_epochs=6, batch_size=batch_size, seed=1)
    assert list(batched) == LRS
    n_train, n_test = len(features[1]), len(features[3])
    for lr in LRS:
        a, b = one_by_one[lr], batched[lr]
        assert len(a) == len(b) == 6
        assert b.column("epoch") == list(range(1, 7))
        assert b.column("train_loss") == pytest.approx(a.column("train_loss"), rel=1e-4, abs=1e-5), lr
        # accuracies: identical up to (at most) one near-tie example flipping
        for key, n in (("train_acc", n_train), ("val_acc", n_test)):
            diffs = [abs(x - y) for x, y in zip(a.column(key), b.column(key))]
            assert max(diffs) <= 1 / n + 1e-6, (lr, key, diffs)
    accuracies = {round(batched[lr].last["val_acc"], 4) for lr in LRS}
    assert len(accuracies) > 1, "the lrs must actually produce different heads (test data too easy?)"


def test_batched_head_sweep_weight_decay_matches_adamw(features):
    batched = batched_head_sweep(*features, [1e-2, 5e-2], num_epochs=4, batch_size=16, seed=2, weight_decay=0.3)
    for lr in (1e-2, 5e-2):
        torch.manual_seed(2)
        head = nn.Linear(12, 3)
        expected = train_head(head, *features, lr=lr, num_epochs=4, batch_size=16, seed=2, weight_decay=0.3)
        assert batched[lr].column("train_loss") == pytest.approx(expected.column("train_loss"), rel=1e-4, abs=1e-5)
    without = batched_head_sweep(*features, [5e-2], num_epochs=4, batch_size=16, seed=2)
    assert without[5e-2].last["train_loss"] != pytest.approx(batched[5e-2].last["train_loss"], rel=1e-4)


def test_batched_head_sweep_is_seeded(features):
    a = batched_head_sweep(*features, LRS, num_epochs=2, seed=0)
    b = batched_head_sweep(*features, LRS, num_epochs=2, seed=0)
    c = batched_head_sweep(*features, LRS, num_epochs=2, seed=1)
    assert [h.column("train_loss") for h in a.values()] == [h.column("train_loss") for h in b.values()]
    assert [h.column("train_loss") for h in a.values()] != [h.column("train_loss") for h in c.values()]


def test_batched_head_sweep_history_fields(features):
    history = batched_head_sweep(*features, [1e-2], num_epochs=3)[1e-2]
    assert all(set(row) == {"epoch", "train_loss", "train_acc", "val_acc", "seconds", "lr"} for row in history)
    seconds = history.column("seconds")
    assert all(0 <= a <= b for a, b in zip(seconds, seconds[1:]))
    assert all(0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1 for row in history)


# ------------------------------------------------------------------ lr_sweep

def test_lr_sweep_trains_a_fresh_seeded_model_per_lr():
    train_loader, val_loader = toy_loaders()
    initial = []

    def make_model():
        model = tiny_net(seed=torch.randint(0, 10**6, ()).item())  # depends on the global RNG lr_sweep seeds
        initial.append(model.fc.weight.detach().clone())
        return model
    results = lr_sweep(make_model, [1e-3, 1e-1], train_loader, val_loader, num_epochs=2, seed=4, progress=False)
    assert list(results) == [1e-3, 1e-1]
    assert len(initial) == 2 and torch.equal(initial[0], initial[1]), "every lr starts from the same model"
    for history in results.values():
        assert isinstance(history, History) and history.column("epoch") == [1, 2]
        assert all(0 <= row["val_acc"] <= 1 for row in history)
    assert results[1e-3].last["train_loss"] != results[1e-1].last["train_loss"]


def test_lr_sweep_result_does_not_depend_on_the_other_lrs():
    """A fair comparison: each lr sees the same model and the same batches, whatever ran before it."""
    alone = lr_sweep(tiny_net, [1e-2], toy_loaders()[0], None, num_epochs=2, progress=False)
    after_another = lr_sweep(tiny_net, [1e-1, 1e-2], toy_loaders()[0], None, num_epochs=2, progress=False)
    assert alone[1e-2].column("train_loss") == after_another[1e-2].column("train_loss")


def test_lr_sweep_passes_fit_options():
    model_states = []

    def make_model():
        model = freeze_all_but_head(tiny_net())
        model_states.append((model, snapshot(model)))
        return model
    lr_sweep(make_model, [0.1], toy_loaders()[0], None, num_epochs=1, weight_decay=0.5, bn_eval=False,
             progress=False)
    model, before = model_states[0]
    assert not torch.equal(model.features[1].running_mean, before["features.1.running_mean"]), "bn_eval=False"
    assert torch.equal(model.features[0].weight, before["features.0.weight"])


def test_lr_sweep_gives_every_lr_the_same_augmentation_draws():
    """The loader and its random crops are reseeded per lr (TensorLoader.reseed), so runs differ only by lr."""
    images, labels = toy_images(32, size=12)
    loader = TensorLoader(images, labels, batch_size=8, shuffle=True, transform=RandomResizedCropFlip(8, seed=7))
    seen = []

    def make_model():
        model = tiny_net()
        model.register_forward_pre_hook(lambda module, inputs: seen[-1].append(inputs[0].clone())
                                        if module.training else None)
        seen.append([])
        return model
    lr_sweep(make_model, [1e-3, 1e-2], loader, None, num_epochs=2, seed=3, progress=False)
    assert len(seen[0]) == len(seen[1]) == 8
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[1])), "same batches and crops for every lr"
    assert not torch.equal(seen[0][0], seen[0][4]), "yet each epoch draws new crops"


def test_head_sweeps_without_validation_features_record_nan(features):
    for sweep in (head_sweep, batched_head_sweep):
        history = sweep(*features[:2], None, None, [1e-2], num_epochs=2)[1e-2]
        assert all(math.isnan(row["val_acc"]) for row in history)


def test_sweep_rows_record_their_lr(features):
    for sweep in (head_sweep, batched_head_sweep):
        results = sweep(*features, [1e-3, 1e-2], num_epochs=2)
        assert all(row["lr"] == lr for lr, history in results.items() for row in history)


def test_batched_head_sweep_seconds_exclude_evaluation(features, monkeypatch):
    import time as time_module
    calls = []
    real = torch.Tensor.argmax

    def slow_argmax(self, *args, **kwargs):  # accuracies are computed with argmax: make them slow
        calls.append(1)
        time_module.sleep(0.1)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, "argmax", slow_argmax)
    started = time_module.perf_counter()
    history = batched_head_sweep(*features, [1e-2, 1e-1], num_epochs=3)[1e-2]
    wall = time_module.perf_counter() - started
    assert len(calls) == 6, "train and val accuracy each epoch: 0.6 s of sleep in all"
    assert history.last["seconds"] < wall - 0.55, (history.column("seconds"), wall)


# ------------------------------------------------------------------ best_lr

def _history(*val_accs):
    return History(dict(epoch=i + 1, val_acc=acc) for i, acc in enumerate(val_accs))


def test_best_lr_picks_the_highest_final_val_acc():
    assert best_lr({1e-4: _history(0.5, 0.8), 1e-3: _history(0.6, 0.9), 1e-2: _history(0.3, 0.1)}) == 1e-3
    assert best_lr({1e-4: _history(0.2, 0.95, 0.5), 1e-3: _history(0.6, 0.7)}) == 1e-3, "final, not best epoch"


def test_best_lr_reads_validation_not_test_accuracy():
    results = {1e-3: History([dict(val_acc=0.6, test_acc=0.9)]), 1e-2: History([dict(val_acc=0.8, test_acc=0.1)])}
    assert best_lr(results) == 1e-2


def test_best_lr_takes_the_smallest_on_ties():
    assert best_lr({1e-2: _history(0.9), 1e-3: _history(0.9), 1e-1: _history(0.2)}) == 1e-3


def test_best_lr_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        best_lr({})


def test_best_lr_on_a_real_sweep(features):
    results = batched_head_sweep(*features, LRS, num_epochs=3)
    assert results[best_lr(results)].last["val_acc"] == max(h.last["val_acc"] for h in results.values())


# ------------------------------------------------------------------ lr_finder

def test_lr_finder_restores_the_model_and_returns_growing_lrs():
    model = tiny_net().eval()
    before = snapshot(model)
    train_loader, _ = toy_loaders()  # 4 batches: the finder must cycle through the loader
    lrs, losses = lr_finder(model, train_loader, start_lr=1e-6, end_lr=1e-3, num_steps=10)
    assert len(lrs) == len(losses) == 10, "no divergence at these small lrs: every step runs"
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1e-3)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert ratios == pytest.approx([10 ** (1 / 3)] * 9), "geometric steps from start_lr to end_lr"
    assert all(math.isfinite(loss) for loss in losses)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items()), "weights and BN buffers restored"
    assert not model.training, "the model's mode is restored too"


def test_lr_finder_first_loss_is_the_untrained_loss():
    model = tiny_net()
    train_loader, _ = toy_loaders()
    x, y = next(iter(toy_loaders()[0]))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model.eval()(x), y).item()
    _, losses = lr_finder(model, train_loader, num_steps=3)
    assert losses[0] == pytest.approx(expected, rel=1e-5), "BN in eval mode (bn_eval=True) and no step yet"


def _noise_loader():
    """Random labels: nothing to learn, so a huge lr makes the loss explode instead of reaching zero."""
    images, _ = toy_images(64)
    labels = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(0))
    return TensorLoader(images, labels, batch_size=16, shuffle=True)


def test_lr_finder_stops_when_the_loss_explodes():
    model = tiny_net()
    lrs, losses = lr_finder(model, _noise_loader(), start_lr=1e-3, end_lr=1e4, num_steps=60)
    assert len(lrs) == len(losses) < 60
    assert not math.isfinite(losses[-1]) or losses[-1] > 4 * min(losses)
    assert all(a < b for a, b in zip(lrs, lrs[1:]))


def test_lr_finder_with_frozen_backbone_keeps_flags():
    model = freeze_all_but_head(tiny_net())
    flags = [p.requires_grad for p in model.parameters()]
    before = snapshot(model)
    lr_finder(model, toy_loaders()[0], num_steps=5)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("start, end", [(0.0, 1.0), (-1e-3, 1.0), (1.0, 1e-3), (1e-2, 1e-2)])
def test_lr_finder_bad_range(start, end):
    with pytest.raises(ValueError, match="start_lr"):
        lr_finder(tiny_net(), toy_loaders()[0], start_lr=start, end_lr=end)


# ------------------------------------------------------------------ suggest_lr

def test_suggest_lr_without_smoothing_is_a_tenth_of_the_minimum():
    lrs = [10.0 ** e for e in range(-6, 1)]
    losses = [2.0, 1.9, 1.5, 0.7, 0.9, 3.0, 9.0]
    assert suggest_lr(lrs, losses, smoothing=0.0) == pytest.approx(1e-4)


def test_suggest_lr_smoothing_ignores_a_single_noisy_dip():
    lrs = [1e-6 * 1.3 ** i for i in range(40)]
    losses = [1.0] * 40
    losses[5] = 0.5                       # one noisy batch
    for i in range(20, 30):
        losses[i] = 0.6                   # the real valley
    for i in range(30, 40):
        losses[i] = 5.0                   # divergence
    suggestion = suggest_lr(lrs, losses)
    assert lrs[20] / 10 <= suggestion <= lrs[29] / 10
    assert suggest_lr(lrs, losses, smoothing=0.0) == pytest.approx(lrs[5] / 10)


def test_suggest_lr_on_a_real_finder_curve():
    lrs, losses = lr_finder(tiny_net(), _noise_loader(), start_lr=1e-5, end_lr=1e3, num_steps=40)
    suggestion = suggest_lr(lrs, losses)
    assert lrs[0] / 10 <= suggestion <= lrs[-1] / 10
    assert suggestion in [lr / 10 for lr in lrs]
