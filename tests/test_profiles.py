"""Unit tests for finetune_helpers.profiles: the FINETUNE_PROFILE switch."""
import dataclasses

import pytest

from finetune_helpers import profiles
from finetune_helpers.models import ARCHITECTURES
from finetune_helpers.profiles import ENV_VAR, OVERRIDES_VAR, PROFILES, Profile, get_profile, with_overrides


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


# ------------------------------------------------------------------ $FINETUNE_OVERRIDES: a smaller run of a profile

def test_overrides_replace_budgets_and_keep_the_rest(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "full")
    monkeypatch.setenv(OVERRIDES_VAR, " image_size=112, num_epochs = 3,lr_head=3e-3,")
    profile = get_profile()
    assert (profile.image_size, profile.num_epochs, profile.lr_head) == (112, 3, 3e-3)
    assert isinstance(profile.image_size, int) and isinstance(profile.lr_head, float)
    assert dataclasses.replace(profile, image_size=224, num_epochs=15, lr_head=1e-3) == PROFILES["full"]
    assert "image_size=112" in repr(profile), "print(profile) in every notebook must show the override"
    assert PROFILES["full"].image_size == 224, "the profile table itself must not change"


def test_no_overrides_means_the_profile_itself(monkeypatch):
    for value in ("", " , "):
        monkeypatch.setenv(OVERRIDES_VAR, value)
        assert get_profile("quick") is PROFILES["quick"]


@pytest.mark.parametrize("bad, message", [
    ("image_size", "cannot read 'image_size'"), ("arch=resnet50", "cannot read 'arch=resnet50'"),
    ("image_sise=64", "keys from"), ("name=full", "cannot read"), ("batch_size=", "cannot read"),
    ("image_size=1.5", "image_size must be a positive int, got '1.5'"), ("num_epochs=0", "positive int"),
    ("lr_head=-1e-3", "lr_head must be a positive float"), ("lr_finetune=nan", "positive float")])
def test_bad_overrides_say_what_to_write(monkeypatch, bad, message):
    monkeypatch.setenv(OVERRIDES_VAR, bad)
    with pytest.raises(ValueError, match=OVERRIDES_VAR) as err:
        get_profile()
    assert message in str(err.value)
    assert with_overrides(PROFILES["quick"], "labels_per_class=5").labels_per_class == 5
