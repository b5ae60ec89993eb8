"""Unit tests for finetune_helpers.profiles: the FINETUNE_PROFILE switch."""
import dataclasses

import pytest

from finetune_helpers import profiles
from finetune_helpers.models import ARCHITECTURES
from finetune_helpers.profiles import ENV_VAR, PROFILES, Profile, get_profile


def test_default_profile_is_quick(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    profile = get_profile()
    assert profile.name == "quick"
    assert profile is PROFILES["quick"]


def test_env_var_switches_profile(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "full")
    assert get_profile().name == "full"
    monkeypatch.setenv(ENV_VAR, "quick")
    assert get_profile().name == "quick"


def test_env_var_is_read_at_call_time_not_import_time(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "full")
    first = get_profile()
    monkeypatch.setenv(ENV_VAR, "quick")
    assert (first.name, get_profile().name) == ("full", "quick")


def test_explicit_name_overrides_env_var(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "full")
    assert get_profile("quick").name == "quick"


def test_name_is_normalised(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "  FULL\n")
    assert get_profile().name == "full"
    assert get_profile(" Quick ").name == "quick"


def test_empty_env_var_means_default(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "")
    assert get_profile().name == "quick"


@pytest.mark.parametrize("bad", ["fast", "gpu", "quik"])
def test_unknown_profile_lists_valid_names(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(ValueError) as err:
        get_profile()
    message = str(err.value)
    assert bad in message and ENV_VAR in message
    for name in PROFILES:
        assert name in message
    with pytest.raises(ValueError, match="quick"):
        get_profile(bad)


def test_quick_profile_settings():
    quick = PROFILES["quick"]
    assert (quick.arch, quick.dataset, quick.image_size, quick.labels_per_class) == (
        "efficientnet_lite0", "digits", 64, 20)
    assert quick.lr_finetune < quick.lr_head


def test_full_profile_settings():
    full = PROFILES["full"]
    assert (full.arch, full.dataset, full.image_size) == ("resnet18", "flowers102", 224)
    assert full.lr_finetune < full.lr_head


def test_every_profile_is_consistent():
    assert set(PROFILES) == {"quick", "full"}
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert profile.arch in ARCHITECTURES
        assert profile.batch_size > 0 and profile.num_epochs > 0 and profile.labels_per_class > 0
        assert 0 < profile.lr_finetune <= profile.lr_head < 1


def test_profile_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["quick"].lr_head = 1.0


def test_module_exports():
    assert profiles.ENV_VAR == "FINETUNE_PROFILE"
    assert isinstance(get_profile("quick"), Profile)
