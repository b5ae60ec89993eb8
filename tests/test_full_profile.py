"""Same notebooks, one switch: every solution notebook runs unchanged with FINETUNE_PROFILE=full, offline, on a CPU.

The full profile's real code path — torchvision's ResNet-18 loaded through the weights API from a file placed in
$TORCH_HOME, Flowers-102 photos from the decode-once uint8 cache, ImageNet normalisation, batch crops and flips,
ResNet layer groups — on a 10-class stand-in for Flowers-102, with the budgets shrunk by $FINETUNE_OVERRIDES so
that the five original notebooks run in about 35 seconds. Network access fails fast (a dead proxy), so a download attempt
fails the test. The numbers these runs print mean nothing (random weights, 3 of 10 photos per class drawn); that
the code runs does.
"""
import colorsys
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import EXPECTED_ASSIGNMENTS, SOLUTIONS, load_script, tool_env

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_fixtures import write_fake_flowers  # noqa: E402

NUM_CLASSES = 10
PER_SPLIT = {"trnid": 10, "valid": 3, "tstid": 4}  # per class: 10 training photos as in Flowers-102, 3 val, 4 test
OVERRIDES = "image_size=32,labels_per_class=3,batch_size=8,num_epochs=2"
DEAD_PROXY = "http://127.0.0.1:9"                 # the discard port: any download is refused at once


def colours(n):
    """n well-separated RGB colours, one per class."""
    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / n, 0.8, 0.9)) for i in range(n)]


@pytest.fixture(scope="module")
def full_profile_env(tmp_path_factory):
    """Environment for a kernel in the full profile: data cache, weights file, overrides, no network."""
    import torchvision.datasets.flowers102 as flowers102

    from finetune_helpers import photos
    root = tmp_path_factory.mktemp("full_profile")
    data = root / "data"
    write_fake_flowers(data, colours=colours(NUM_CLASSES), per_split=PER_SPLIT)
    with pytest.MonkeyPatch.context() as patch:  # the stand-in's .mat files cannot match the real md5 sums
        patch.setattr(flowers102, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
        photos.load_flowers(root=data, labels_per_class=3, image_size=32)  # decodes once into the cache
    shutil.rmtree(data / "flowers-102" / "jpg")  # from now on only the cache can answer
    checkpoints = root / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / "resnet18-f37072fd.pth")
    env = {**tool_env(), "FINETUNE_PROFILE": "full", "FINETUNE_DATA": str(data), "FINETUNE_OVERRIDES": OVERRIDES,
           "TORCH_HOME": str(root / "torch")}
    env.update({name: DEAD_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    return env


@pytest.mark.slow
@pytest.mark.parametrize("assignment", EXPECTED_ASSIGNMENTS)
def test_solution_runs_in_the_full_profile(assignment, full_profile_env, tmp_path, monkeypatch, capsys):
    for name, value in full_profile_env.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / assignment
    shutil.copytree(SOLUTIONS / assignment, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    execute_notebook = load_script("execute_notebook")
    status = execute_notebook.main([str(work / f"{assignment}.ipynb"), str(tmp_path / "executed.ipynb")])
    printed = capsys.readouterr().out
    assert status == 0, f"solutions/{assignment} fails in the full profile:\n{printed[-4000:]}"
    assert ("Profile(name='full', arch='resnet18', dataset='flowers102', image_size=32, labels_per_class=3, "
            "batch_size=8, num_epochs=2") in printed, "the notebook should have printed the full profile"
