"""Unit tests for finetune_helpers.checkpoints: save a fine-tuned model, load it back for inference, safely."""
import os
import pickle

import pytest
import torch

from finetune_helpers.checkpoints import architecture_of, load_model, save_model
from finetune_helpers.models import build_model


@pytest.fixture(scope="module")
def tuned():
    """A ResNet-18 (random weights, 5 classes) whose weights and BN statistics differ from a fresh build."""
    torch.manual_seed(0)
    model = build_model(5, "resnet18", pretrained=False)
    with torch.no_grad():
        model.fc.weight.mul_(3)
        model.bn1.running_mean.add_(0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "resnet50"])
def test_architecture_is_recognised(arch):
    assert architecture_of(build_model(3, arch, pretrained=False)) == arch


def test_architecture_of_an_unknown_model_is_a_clear_error():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="build_model"):
        architecture_of(Net())


def test_save_then_load_gives_the_same_predictions(tuned, tmp_path):
    path = save_model(tuned, tmp_path / "models" / "tuned.pt", classes=list("abcde"), val_acc=0.91, epoch=7)
    assert path.exists()
    loaded = load_model(path)
    assert not loaded.training and loaded.fc.out_features == 5
    assert loaded.meta == dict(classes=list("abcde"), val_acc=0.91, epoch=7)
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tuned.state_dict().items()), "weights and BN buffers"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), tuned(x))


def test_load_model_puts_the_model_on_the_device(tuned, tmp_path):
    loaded = load_model(save_model(tuned, tmp_path / "m.pt"), device="cpu")
    assert next(loaded.parameters()).device.type == "cpu" and loaded.meta == {}


def test_a_file_not_written_by_save_model_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="save_model"):
        load_model(tmp_path / "other.pt")


class _Payload:
    """Unpickling this runs os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_cannot_run_code_when_loaded(tmp_path):
    """A real attack: a checkpoint whose pickle calls os.system. weights_only loading refuses it unrun."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "finetune_helpers.checkpoint/1", "arch": "resnet18", "num_classes": 2, "meta": {},
                "state_dict": {}, "payload": _Payload(marker)}, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_model(path)
    assert not marker.exists(), "loading the checkpoint ran the attacker's command"
