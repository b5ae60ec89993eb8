"""The benchmark (finetune_helpers.bench): both parts run end to end at a tiny size on the CPU and report
consistent numbers; the CUDA run is checked only where there is a GPU. No assertion here is about speed."""
import dataclasses
import json
import math

import pytest
import torch

from finetune_helpers import bench, load_data
from finetune_helpers.profiles import get_profile

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core CPU, two spinning threads are many times slower, never faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_reference_inputs():
    """Quick-profile data cut to 2 labels per class and 100 test images, and one epoch per stage."""
    profile = get_profile("quick")
    data = load_data(profile, labels_per_class=2)
    data.test_images, data.test_labels = data.test_images[:100], data.test_labels[:100]
    settings = bench.reference_settings(profile)
    for stage in settings.values():
        stage["num_epochs"] = 1
    settings["staged"]["head_epochs"] = 1
    return profile, data, settings


def check_pipeline_result(result, device):
    """Fields every pipeline result has, and ratios that agree with the times they come from."""
    ft, head, sweep = result["full_finetune"], result["head_only"], result["sweep"]
    images = ft["images_per_epoch"] * ft["epochs"]
    assert ft["images_per_epoch"] == 64 and ft["epochs"] == 1
    assert math.isclose(ft["tutorial_images_per_s"], images / ft["tutorial_seconds"])
    assert math.isclose(ft["course_images_per_s"], images / (ft["course_decode_seconds"] + ft["course_train_seconds"]))
    assert math.isclose(ft["speedup_end_to_end"], ft["course_images_per_s"] / ft["tutorial_images_per_s"])
    assert math.isclose(head["head_epoch_speedup"], head["frozen_epoch_seconds"] / head["cached_epoch_seconds"])
    assert math.isclose(sweep["speedup"], sweep["one_by_one_seconds"] / sweep["batched_seconds"])
    assert sweep["num_lrs"] == 4 and sweep["max_test_acc_gap"] <= 0.07, \
        "the batched sweep should reproduce the one-by-one sweep (at most a couple of flipped predictions)"
    assert set(result["goals"]) == {"end_to_end_speedup", "head_epoch_speedup", "sweep_speedup"}
    assert result["goals_apply"] is False, "goals only apply to the full size on a GPU"
    assert result["machine"]["device"] == device and result["machine"]["cpu_cores"] >= 1
    assert result["settings"]["cache_size"] == 37 and result["settings"]["mean_jpeg_kib"] > 0
    assert "this run only proves the code path works" in bench.format_pipeline(result)


def test_pipeline_benchmark_cli_runs_tiny_on_cpu(tmp_path, capsys):
    path = tmp_path / "out" / "gpu_tiny.json"
    bench.main(["--gpu", "--size", "tiny", "--device", "cpu", "--compile", "--json", str(path)])
    result = json.loads(path.read_text())
    check_pipeline_result(result, "cpu")
    assert "no CUDA device" in result["notes"]["device"]
    assert result["notes"]["compile"].startswith("skipped"), "torch.compile is CUDA-only and must skip cleanly"
    assert result["command"].startswith("python -m finetune_helpers.bench --gpu --size tiny")
    printed = capsys.readouterr().out
    assert "tutorial (PIL + DataLoader" in printed and f"wrote {path}" in printed
    # how a GPU run's torch.compile line reads (the numbers are made up: compile only runs on CUDA)
    result["full_finetune"]["compiled"] = dict(train_images_per_s=1500.0, compile_and_warmup_seconds=42.0,
                                               pays_off_after_images=30600.0, pays_off_after_full_profile_epochs=30.0)
    assert ("+ torch.compile: 1500 img/s training (compile + warm-up 42.0 s): pays off after 30,600 images = 30.0 "
            "epochs of the full profile's training set") in bench.format_pipeline(result)
    result["full_finetune"]["compiled"].update(pays_off_after_images=None, pays_off_after_full_profile_epochs=None)
    assert "(compile + warm-up 42.0 s): never pays off here" in bench.format_pipeline(result)


def test_compile_break_even_counts_the_compiling_epoch():
    # eager 100 img/s; compiled 200 img/s once warm, after a first epoch of 50 images that took 10.25 s:
    # N images cost 10.25 + (N - 50) / 200 s compiled and N / 100 s eager, equal at N = 2,000
    assert bench.compile_break_even(10.25, 50, 100, 200) == pytest.approx(2000)
    assert bench.compile_break_even(0.1, 50, 100, 200) == 0.0, "a first epoch faster than eager pays at once"
    assert bench.compile_break_even(10.25, 50, 200, 200) is None, "no faster: never pays"
    assert bench.compile_break_even(10.25, 50, 300, 200) is None


@cuda
def test_pipeline_benchmark_runs_tiny_on_cuda(tmp_path):
    result = bench.run_pipeline("tiny", device="cuda", workdir=tmp_path, compile_model=False)
    check_pipeline_result(result, "cuda")
    assert result["machine"]["accelerator"] and "device" not in result["notes"]


def test_reference_experiments_run_at_a_tiny_size():
    profile, data, settings = tiny_reference_inputs()
    result = bench.run_reference(profile, seeds=[0, 1], device="cpu", data=data, settings=settings)
    experiments = result["experiments"]
    assert result["profile_settings"] == dataclasses.asdict(profile), "record every budget (overrides included)"
    assert list(experiments) == ["scratch", "head_only", "head_only_uncached", "full_ft_small_lr",
                                 "full_ft_large_lr", "staged"]
    total = experiments["scratch"]["total_params"]
    head = 1280 * 10 + 10  # EfficientNet-Lite0's 1280 features -> 10 digits
    assert experiments["scratch"]["trainable_params"] == total
    assert experiments["full_ft_small_lr"]["trainable_params"] == total
    assert experiments["head_only"]["trainable_params"] == head == experiments["head_only_uncached"]["trainable_params"]
    assert head < experiments["staged"]["trainable_params"] < total
    assert experiments["scratch"]["settings"]["bn_eval"] is False
    assert experiments["full_ft_large_lr"]["settings"]["lr"] == 1e-2
    for row in experiments.values():
        assert len(row["accuracy"]) == 2 and all(0 <= a <= 1 for a in row["accuracy"])
        assert all(s > 0 for s in row["seconds"]) and row["accuracy_std"] is not None
        assert math.isclose(row["accuracy_mean"], sum(row["accuracy"]) / 2)
    caching = result["head_only_caching"]
    assert math.isclose(caching["uncached_seconds"], experiments["head_only_uncached"]["seconds_mean"])
    assert caching["speedup_end_to_end"] > 0 and caching["num_epochs"] == 1
    assert set(result["phenomena"]) == {"head_only_minus_scratch_points", "full_ft_large_lr_accuracy",
                                        "full_ft_small_lr_minus_head_only_points", "staged_minus_head_only_points"}
    table = bench.format_reference(result)
    assert all(row["label"] in table for row in experiments.values()) and "±" in table
    json.dumps(result)  # everything in it is JSON-serialisable


def test_reference_with_one_seed_has_no_std():
    mean, std = bench.mean_std([0.5])
    assert mean == 0.5 and std is None
    mean, std = bench.mean_std([0.5, 0.7])
    assert math.isclose(mean, 0.6) and math.isclose(std, 0.1414213562, rel_tol=1e-6)


def test_phenomena_compare_the_right_experiments():
    def experiments(**acc):
        return {name: {"accuracy_mean": value} for name, value in acc.items()}

    good = bench.phenomena(experiments(scratch=0.6, head_only=0.9, full_ft_small_lr=0.94, full_ft_large_lr=0.1,
                                       staged=0.92))
    assert all(check["met"] for check in good.values())
    assert math.isclose(good["head_only_minus_scratch_points"]["value"], 30)
    bad = bench.phenomena(experiments(scratch=0.78, head_only=0.9, full_ft_small_lr=0.88, full_ft_large_lr=0.3,
                                      staged=0.89))
    assert not any(check["met"] for check in bad.values())

