"""Unit tests for finetune_helpers.training: optimizer, fit/evaluate, feature extraction and head training."""
import copy
import math
import time
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from finetune_helpers.data import TensorLoader
from finetune_helpers.freezing import changed_frozen, freeze, freeze_all_but_head, snapshot
from finetune_helpers.training import (History, evaluate, extract_features, feature_batches, fit, headless,
                                       make_optimizer, train_head)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import blobs, tiny_net, toy_images, toy_loaders  # noqa: E402

FIELDS = {"epoch", "train_loss", "train_acc", "val_acc", "seconds", "lr"}


@pytest.fixture
def loaders():
    return toy_loaders()


def _plain_loader(n=32, batch_size=8, seed=5):
    return TensorLoader(*toy_images(n, seed=seed), batch_size=batch_size)


def _manual(model, loader):
    """Mean cross-entropy and accuracy over LOADER in eval mode, computed independently of the package."""
    model.eval()
    with torch.no_grad():
        xs, ys = zip(*loader)
        logits, labels = model(torch.cat(xs)), torch.cat(ys)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


# ------------------------------------------------------------------ History

def test_history_last_and_column():
    history = History([dict(epoch=1, val_acc=0.5), dict(epoch=2, val_acc=0.75)])
    assert history.last == dict(epoch=2, val_acc=0.75)
    assert history.column("val_acc") == [0.5, 0.75]
    assert isinstance(history, list) and len(history) == 2


# ------------------------------------------------------------------ make_optimizer

def test_make_optimizer_refuses_no_parameters():
    with pytest.raises(ValueError, match="no parameters") as err:
        make_optimizer([], lr=1e-3)
    assert "unfreeze" in str(err.value) and "trainable_parameters" in str(err.value)
    with pytest.raises(ValueError, match="no parameters"):
        make_optimizer((p for p in freeze(nn.Linear(2, 2)).parameters() if p.requires_grad), lr=1e-3)
    with pytest.raises(ValueError, match="no parameters"):
        make_optimizer([{"params": []}, {"params": []}], lr=1e-3)


def test_make_optimizer_adamw_settings():
    layer = nn.Linear(3, 2)
    optimizer = make_optimizer((p for p in layer.parameters()), lr=0.02, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.AdamW)
    (group,) = optimizer.param_groups
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.1
    assert [id(p) for p in group["params"]] == [id(p) for p in layer.parameters()]


def test_make_optimizer_keeps_param_group_lrs():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = make_optimizer([{"params": list(a.parameters()), "lr": 0.5}, {"params": list(b.parameters())},
                                {"params": []}], lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups][:2] == [0.5, 0.1]


def test_make_optimizer_default_has_no_weight_decay():
    (group,) = make_optimizer(nn.Linear(2, 2).parameters(), lr=0.1).param_groups
    assert group["weight_decay"] == 0.0


# ------------------------------------------------------------------ fit

def test_fit_learns_an_easy_problem(loaders):
    train_loader, val_loader = loaders
    model = tiny_net()
    loss_before, acc_before = _manual(model, train_loader)
    assert acc_before <= 0.6, "the untrained model must start near chance for this test to mean anything"
    history = fit(model, train_loader, val_loader, lr=0.05, num_epochs=8, progress=False)
    assert isinstance(history, History) and len(history) == 8
    assert all(set(row) == FIELDS for row in history)
    assert history.column("epoch") == list(range(1, 9))
    assert history.last["train_loss"] < 0.5 * history[0]["train_loss"]
    assert _manual(model, train_loader)[0] < 0.5 * loss_before
    assert history.last["train_acc"] >= 0.95 and history.last["val_acc"] >= 0.95
    seconds = history.column("seconds")
    assert all(0 <= a <= b for a, b in zip(seconds, seconds[1:]))


def test_fit_history_values_are_what_they_claim(loaders):
    """With lr 0 nothing moves, so each epoch's loss/accuracy equal an independent computation."""
    train_loader, val_loader = loaders
    model = tiny_net()
    before = snapshot(model)
    history = fit(model, train_loader, val_loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                  num_epochs=2, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "num_batches" not in k)
    loss, acc = _manual(model, train_loader)
    _, val_acc = _manual(model, val_loader)
    for row in history:
        assert row["train_loss"] == pytest.approx(loss, rel=1e-5)
        assert row["train_acc"] == pytest.approx(acc)
        assert row["val_acc"] == pytest.approx(val_acc)


def test_fit_val_acc_matches_evaluate(loaders):
    train_loader, val_loader = loaders
    model = tiny_net()
    history = fit(model, train_loader, val_loader, lr=0.01, num_epochs=2, progress=False)
    assert history.last["val_acc"] == evaluate(model, val_loader)


def test_fit_without_val_loader_records_nan(loaders):
    history = fit(tiny_net(), loaders[0], lr=0.01, num_epochs=2, progress=False)
    assert all(math.isnan(row["val_acc"]) for row in history)


def test_fit_needs_lr_or_optimizer(loaders):
    with pytest.raises(ValueError, match="lr="):
        fit(tiny_net(), loaders[0], num_epochs=1, progress=False)


def test_fit_refuses_a_fully_frozen_model(loaders):
    with pytest.raises(ValueError, match="no parameters"):
        fit(freeze(tiny_net()), loaders[0], lr=0.1, num_epochs=1, progress=False)


def test_fit_leaves_frozen_parameters_and_their_bn_stats_alone(loaders):
    model = freeze_all_but_head(tiny_net())
    before = snapshot(model)
    fit(model, loaders[0], lr=0.1, num_epochs=2, weight_decay=0.5, progress=False)
    assert changed_frozen(model, before) == []
    assert all(torch.equal(before[k], v) for k, v in model.features.state_dict(prefix="features.").items()
               if "num_batches" not in k)
    assert not torch.equal(before["fc.weight"], model.fc.weight), "the head trains"


def test_fit_bn_eval_keeps_running_stats_of_trainable_bn(loaders):
    model = tiny_net()
    before = snapshot(model)
    fit(model, loaders[0], lr=0.01, num_epochs=1, progress=False)  # bn_eval=True by default
    for name in ("features.1.running_mean", "features.4.running_var"):
        assert torch.equal(before[name], model.state_dict()[name])
    assert not torch.equal(before["features.0.weight"], model.features[0].weight), "weights still train"


def test_fit_bn_train_mode_updates_running_stats(loaders):
    model = tiny_net()
    before = snapshot(model)
    fit(model, loaders[0], lr=0.01, num_epochs=1, bn_eval=False, progress=False)
    assert not torch.equal(before["features.1.running_mean"], model.features[1].running_mean)
    assert model.features[1].num_batches_tracked.item() == len(loaders[0])


def test_fit_uses_the_given_optimizer(loaders):
    model = tiny_net()
    optimizer = torch.optim.SGD([model.fc.bias], lr=0.1)
    before = snapshot(model)
    fit(model, loaders[0], optimizer=optimizer, num_epochs=1, progress=False)
    assert torch.equal(before["fc.weight"], model.fc.weight)
    assert not torch.equal(before["fc.bias"], model.fc.bias)


def test_fit_weight_decay_reaches_the_optimizer(loaders):
    model, twin = tiny_net(), tiny_net()
    fit(model, loaders[0], lr=0.01, num_epochs=1, progress=False)
    fit(twin, toy_loaders()[0], lr=0.01, num_epochs=1, weight_decay=0.9, progress=False)
    assert not torch.equal(model.fc.weight, twin.fc.weight)


def test_fit_is_deterministic():
    runs = []
    for _ in range(2):
        model = tiny_net()
        runs.append((fit(model, toy_loaders()[0], lr=0.05, num_epochs=2, progress=False).column("train_loss"),
                     model.fc.weight.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_fit_with_progress_bar(loaders, capsys):
    history = fit(tiny_net(), loaders[0], lr=0.01, num_epochs=1, progress=True, desc="tiny")
    assert len(history) == 1


def test_fit_with_zero_epochs_is_empty(loaders):
    model = tiny_net()
    before = snapshot(model)
    assert fit(model, loaders[0], lr=0.1, num_epochs=0, progress=False) == []
    assert torch.equal(before["fc.weight"], model.fc.weight)


# ------------------------------------------------------------------ evaluate

@pytest.mark.parametrize("training", [True, False])
def test_evaluate_is_accuracy_and_restores_mode(training):
    model = tiny_net().train(training)
    loader = _plain_loader()
    before = snapshot(model)
    accuracy = evaluate(model, loader)
    assert model.training == training and model.features[1].training == training
    assert torch.equal(before["features.1.running_mean"], model.features[1].running_mean), "eval mode, no stats"
    assert accuracy == pytest.approx(_manual(model, loader)[1])
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_known_accuracy():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1, 1)

        def forward(self, x):
            return torch.tensor([[0.0, 1.0]]).expand(len(x), 2)  # always predicts class 1
    images = torch.zeros(10, 3, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert evaluate(Constant(), TensorLoader(images, labels, batch_size=3)) == pytest.approx(0.3)


# ------------------------------------------------------------------ headless / extract_features

def test_headless_swaps_in_identity_and_restores():
    model = tiny_net()
    head = model.fc
    with headless(model) as inner:
        assert inner is model and isinstance(model.fc, nn.Identity)
        assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 8)
    assert model.fc is head


def test_headless_restores_the_head_on_exception():
    model = tiny_net()
    head = model.fc
    with pytest.raises(RuntimeError, match="boom"):
        with headless(model):
            raise RuntimeError("boom")
    assert model.fc is head


@pytest.mark.parametrize("training", [True, False])
def test_extract_features_is_the_headless_output(training):
    model = tiny_net().train(training)
    head = model.fc
    loader = _plain_loader(n=20, batch_size=6)
    feats, labels = extract_features(model, loader)
    assert model.fc is head and model.training == training
    assert feats.dtype == torch.float32 and feats.shape == (20, 8) and not feats.requires_grad
    assert torch.equal(labels, torch.cat([y for _, y in loader]))
    torch.testing.assert_close(feats, _identity_head_output(model, loader))
    with torch.no_grad():
        torch.testing.assert_close(model.eval().fc(feats), model(torch.cat([x for x, _ in loader])))


def _identity_head_output(model, loader):
    """What a copy of MODEL with nn.Identity as its head outputs over LOADER, in eval mode."""
    twin = copy.deepcopy(model).eval()
    twin.fc = nn.Identity()
    with torch.no_grad():
        return torch.cat([twin(x) for x, _ in loader])


def test_extract_features_on_resnet():
    from finetune_helpers.models import load_backbone
    model = load_backbone("resnet18", pretrained=False).train()
    loader = TensorLoader(*toy_images(6, size=32), batch_size=4)
    feats, labels = extract_features(model, loader)
    assert feats.shape == (6, 512) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    torch.testing.assert_close(feats, _identity_head_output(model, loader))
    assert model.training and isinstance(model.fc, nn.Linear)


# ------------------------------------------------------------------ head training on cached features

def test_feature_batches_cover_every_example_once():
    feats, labels = torch.arange(10.0)[:, None], torch.arange(10)
    batches = list(feature_batches(feats, labels, 4, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))
    assert all(torch.equal(x[:, 0].long(), y) for x, y in batches), "features stay with their labels"


def test_train_head_learns_a_separable_problem():
    train_feats, train_labels = blobs(90, seed=0)
    val_feats, val_labels = blobs(60, seed=0, noise_seed=1)  # same classes, new examples
    torch.manual_seed(0)
    head = nn.Linear(16, 3)
    history = train_head(head, train_feats, train_labels, val_feats, val_labels, lr=0.05, num_epochs=15)
    assert len(history) == 15 and all(set(row) == FIELDS for row in history)
    assert history.column("epoch") == list(range(1, 16))
    assert history.last["train_acc"] == 1.0 and history.last["val_acc"] == 1.0
    assert history.last["train_loss"] < history[0]["train_loss"]
    with torch.no_grad():
        assert (head(val_feats).argmax(1) == val_labels).float().mean() == 1.0, "the head object is trained"


def test_train_head_history_accuracy_is_exact():
    feats, labels = blobs(40, seed=1)
    torch.manual_seed(1)
    head = nn.Linear(16, 3)
    history = train_head(head, feats, labels, feats[:10], labels[:10], lr=1e-3, num_epochs=1)
    with torch.no_grad():
        assert history.last["train_acc"] == pytest.approx((head(feats).argmax(1) == labels).float().mean().item())
        assert history.last["val_acc"] == pytest.approx(
            (head(feats[:10]).argmax(1) == labels[:10]).float().mean().item())


def test_train_head_without_test_features_records_nan():
    feats, labels = blobs(30)
    history = train_head(nn.Linear(16, 3), feats, labels, lr=0.01, num_epochs=2)
    assert all(math.isnan(row["val_acc"]) for row in history)


def test_train_head_is_seeded():
    feats, labels = blobs(50)

    def run(seed):
        torch.manual_seed(0)
        head = nn.Linear(16, 3)
        train_head(head, feats, labels, lr=0.01, num_epochs=2, batch_size=8, seed=seed)
        return head.weight.detach().clone()
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1)), "the seed drives the batch order"


def test_train_head_weight_decay_changes_the_result():
    feats, labels = blobs(50)
    heads = []
    for decay in (0.0, 0.5):
        torch.manual_seed(0)
        heads.append(nn.Linear(16, 3))
        train_head(heads[-1], feats, labels, lr=0.05, num_epochs=3, weight_decay=decay)
    assert heads[1].weight.norm() < heads[0].weight.norm()


def test_train_head_refuses_a_frozen_head():
    head = freeze(nn.Linear(16, 3))
    feats, labels = blobs(10)
    with pytest.raises(ValueError, match="no parameters"):
        train_head(head, feats, labels, lr=0.01)


def test_train_head_trains_only_trainable_head_parameters():
    head = nn.Linear(16, 3)
    head.bias.requires_grad = False
    bias = head.bias.detach().clone()
    feats, labels = blobs(30)
    train_head(head, feats, labels, lr=0.05, num_epochs=2, weight_decay=0.5)
    assert torch.equal(head.bias, bias)


# ------------------------------------------------------------------ History.best / best_epoch

def test_history_best_is_the_highest_val_acc_earliest_on_ties():
    history = History([dict(epoch=1, val_acc=0.5), dict(epoch=2, val_acc=0.8), dict(epoch=3, val_acc=0.8),
                       dict(epoch=4, val_acc=0.6)])
    assert history.best_epoch == 2 and history.best == dict(epoch=2, val_acc=0.8)


def test_history_best_needs_validation_accuracy():
    for history in (History(), History([dict(epoch=1, val_acc=math.nan)])):
        with pytest.raises(ValueError, match="val_loader"):
            history.best_epoch


# ------------------------------------------------------------------ the training clock

class SlowLoader:
    """Wraps a loader and sleeps `delay` seconds before yielding each batch (an expensive evaluation)."""

    def __init__(self, loader, delay):
        self.loader, self.delay = loader, delay

    def __iter__(self):
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


def test_fit_seconds_count_training_only_not_evaluation(loaders):
    train_loader, val_loader = loaders
    slow_val = SlowLoader(val_loader, delay=0.25)  # 2 batches: 0.5 s of "evaluation" per epoch
    started = time.perf_counter()
    history = fit(tiny_net(), train_loader, slow_val, lr=0.01, num_epochs=2, progress=False)
    wall = time.perf_counter() - started
    assert wall >= 1.0, "the slow validation loader must really have been read each epoch"
    assert history.last["seconds"] < wall - 0.9, (history.column("seconds"), wall)
    slow_train = fit(tiny_net(), SlowLoader(train_loader, delay=0.1), val_loader, lr=0.01, num_epochs=1,
                     progress=False)
    assert slow_train.last["seconds"] >= 0.4, "training time itself is counted (4 batches x 0.1 s)"


def test_train_head_seconds_exclude_evaluation(monkeypatch):
    from finetune_helpers import training
    feats, labels = blobs(40)
    real = training._head_accuracy

    def slow_accuracy(*args):
        time.sleep(0.2)
        return real(*args)
    monkeypatch.setattr(training, "_head_accuracy", slow_accuracy)
    started = time.perf_counter()
    history = train_head(nn.Linear(16, 3), feats, labels, feats, labels, lr=0.01, num_epochs=3)
    wall = time.perf_counter() - started
    assert history.last["seconds"] < wall - 1.1, "3 epochs x 2 evaluations x 0.2 s must not be counted"


# ------------------------------------------------------------------ schedules through fit

def test_fit_steps_the_scheduler_once_per_batch_and_records_the_lr(loaders):
    train_loader, val_loader = loaders  # 4 batches per epoch
    model = tiny_net()
    optimizer = make_optimizer(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    history = fit(model, train_loader, val_loader, optimizer=optimizer, scheduler=scheduler, num_epochs=3,
                  progress=False)
    assert scheduler.last_epoch == 3 * len(train_loader)
    # each row holds the lr of its epoch's last step: step 3, 7, 11 -> 0.1 / 4, 0.1 / 8, 0.1 / 12
    assert history.column("lr") == pytest.approx([0.1 / 4, 0.1 / 8, 0.1 / 12])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 13)


def test_fit_records_a_constant_lr_without_scheduler(loaders):
    history = fit(tiny_net(), loaders[0], lr=0.03, num_epochs=2, progress=False)
    assert history.column("lr") == [0.03, 0.03]


# ------------------------------------------------------------------ early stopping and the best checkpoint

def _flipped_loaders():
    """Validation labels are the opposite of the training labels: the more the model learns, the worse val gets."""
    train_loader, val_loader = toy_loaders()
    flipped = TensorLoader(val_loader.images, 1 - val_loader.labels, batch_size=16)
    return train_loader, flipped


def test_fit_patience_stops_when_val_acc_stops_improving(loaders):
    model = tiny_net()
    frozen_lr = torch.optim.SGD(model.parameters(), lr=0.0)  # nothing moves: val_acc never improves after epoch 1
    history = fit(model, loaders[0], loaders[1], optimizer=frozen_lr, num_epochs=10, patience=2, progress=False)
    assert history.column("epoch") == [1, 2, 3], "epoch 1 is the best; 2 more without improvement, then stop"
    learning = fit(tiny_net(), *toy_loaders(), lr=0.05, num_epochs=6, patience=6, progress=False)
    assert len(learning) == 6, "patience larger than the run never stops it"


def test_fit_restore_best_loads_the_best_validation_epoch():
    train_loader, flipped = _flipped_loaders()
    model = tiny_net()
    states = []
    real_evaluate = evaluate

    def spy(net, loader):  # the weights each validation saw, epoch by epoch
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        return real_evaluate(net, loader)
    import finetune_helpers.training as training
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "evaluate", spy)
        history = fit(model, train_loader, flipped, lr=0.002, num_epochs=5, restore_best=True, progress=False)
    accs = history.column("val_acc")
    assert accs[-1] < max(accs), f"the test needs a run whose last epoch is not its best: {accs}"
    best = history.best_epoch
    assert all(torch.equal(v, states[best - 1][k]) for k, v in model.state_dict().items()), \
        "the model should hold the weights (and BN buffers) of the best-val epoch"
    assert evaluate(model, flipped) == history.best["val_acc"]
    last_kept = fit(tiny_net(), *_flipped_loaders(), lr=0.002, num_epochs=5, progress=False)
    assert last_kept.column("val_acc") == accs, "restore_best changes the weights at the end, not the run"


def test_fit_patience_with_restore_best_ends_on_the_best_weights():
    train_loader, flipped = _flipped_loaders()
    model = tiny_net()
    history = fit(model, train_loader, flipped, lr=0.002, num_epochs=20, patience=2, restore_best=True,
                  progress=False)
    assert len(history) == history.best_epoch + 2
    assert evaluate(model, flipped) == history.best["val_acc"]


@pytest.mark.parametrize("kwargs", [dict(patience=2), dict(restore_best=True)])
def test_fit_early_stopping_needs_a_val_loader(loaders, kwargs):
    with pytest.raises(ValueError, match="val_loader"):
        fit(tiny_net(), loaders[0], lr=0.1, num_epochs=1, progress=False, **kwargs)


@pytest.mark.parametrize("patience", [0, -1, 1.5, True])
def test_fit_refuses_a_bad_patience(loaders, patience):
    with pytest.raises(ValueError, match="patience"):
        fit(tiny_net(), *loaders, lr=0.1, num_epochs=1, patience=patience, progress=False)
