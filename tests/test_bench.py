"""The benchmark (finetune_helpers.bench): reference, label-budget and pipeline parts run end to end at a tiny size
on the CPU and report consistent numbers; the CUDA run is checked only where there is a GPU. No assertion here is
about speed."""
import dataclasses
import importlib
import inspect
import json
import math
import pkgutil

import matplotlib
import pytest
import torch

import finetune_helpers.bench
from finetune_helpers import bench, load_data, training
from finetune_helpers.bench import cli, label_budget, runs
from finetune_helpers.plots import plot_label_budget
from finetune_helpers.profiles import get_profile, with_overrides

matplotlib.use("Agg")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core CPU, two spinning threads are many times slower, never faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    assert sweep["num_lrs"] == 4 and sweep["max_val_acc_gap"] <= 0.07, \
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




# ------------------------------------------------------------------ tiny inputs shared by the reference and budget

TINY = "image_size=32,labels_per_class=2,num_epochs=1"  # 1 epoch per stage; 2 labels/class = the reference budget


def tiny_profile():
    """The quick profile at 32 px, 2 labels per class, one epoch per stage."""
    return with_overrides(get_profile("quick"), TINY)


def tiny_load(profile, labels_per_class=None, seed=0):
    """The quick-profile data with validation cut to 40 and test to 30 images (fixed, as the real splits are)."""
    data = load_data(profile, labels_per_class=labels_per_class, seed=seed)
    data.val_images, data.val_labels = data.val_images[:40], data.val_labels[:40]
    data.test_images, data.test_labels = data.test_images[:30], data.test_labels[:30]
    return data


class EvaluateSpy:
    """Wraps training.evaluate (fit's validation) and runs.evaluate (final scores): counts calls per split size."""

    def __init__(self, monkeypatch):
        self.sizes, real = [], training.evaluate

        def spy(model, loader):
            self.sizes.append(len(loader.labels))
            return real(model, loader)
        monkeypatch.setattr(training, "evaluate", spy)
        monkeypatch.setattr(runs, "evaluate", spy)


@pytest.fixture(scope="module")
def tiny_reference():
    """Every reference experiment at the tiny size, seeds 0 and 1, with the calls on the test set counted."""
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = EvaluateSpy(monkeypatch)
        profile = tiny_profile()
        result = bench.run_reference(profile, seeds=[0, 1], device="cpu", data=tiny_load(profile))
    return profile, result, spy.sizes


def test_reference_runs_every_experiment_with_its_budget(tiny_reference):
    profile, result, _ = tiny_reference
    experiments = result["experiments"]
    assert result["profile_settings"] == dataclasses.asdict(profile), "record every budget (overrides included)"
    assert list(experiments) == ["scratch", "scratch_equal_epochs", "head_only", "head_only_uncached",
                                 "full_ft_small_lr", "full_ft_mid_lr", "full_ft_mid_lr_warmup", "full_ft_large_lr",
                                 "staged", "bitfit", "lora_r4", "lora_r16"]
    total = experiments["scratch"]["total_params"]
    head = 1280 * 10 + 10  # EfficientNet-Lite0's 1280 features -> 10 digits
    assert experiments["scratch"]["trainable_params"] == total == experiments["full_ft_small_lr"]["trainable_params"]
    assert experiments["head_only"]["trainable_params"] == head == experiments["head_only_uncached"]["trainable_params"]
    assert head < experiments["bitfit"]["trainable_params"] < experiments["lora_r4"]["trainable_params"] \
        < experiments["lora_r16"]["trainable_params"] < experiments["staged"]["trainable_params"] < total
    assert experiments["lora_r16"]["total_params"] > total, "LoRA adds its A and B to the frozen backbone"
    assert experiments["lora_r4"]["settings"]["task_bytes"] < experiments["lora_r16"]["settings"]["task_bytes"]
    scratch = experiments["scratch"]["settings"]
    assert scratch["bn_eval"] is False and scratch["restore_best"] and scratch["patience"] == 1
    assert scratch["num_epochs"] == 6, "the cap: 6x the fine-tuning budget"
    assert all(1 <= e <= 6 for e in experiments["scratch"]["epochs"])
    assert experiments["scratch"]["stopped_early"] == [e < 6 for e in experiments["scratch"]["epochs"]]
    assert experiments["full_ft_large_lr"]["settings"]["lr"] == 1e-2
    warm = experiments["full_ft_mid_lr_warmup"]["settings"]
    assert warm["lr"] == 1e-3 and warm["schedule"] == "warmup_cosine" and warm["warmup_steps"] >= 0
    assert "schedule" not in experiments["full_ft_mid_lr"]["settings"]
    for name, row in experiments.items():
        for key in ("test_acc", "val_acc"):
            assert len(row[key]) == 2 and all(0 <= a <= 1 for a in row[key]), name
            assert math.isclose(row[f"{key}_mean"], sum(row[key]) / 2) and row[f"{key}_std"] is not None
        assert all(s > 0 for s in row["seconds"]) and len(row["epochs"]) == 2, name
    assert experiments["scratch"]["val_acc"] == [max(c) for c in experiments["scratch"]["val_curve"]], \
        "early stopping restores the best-validation weights: their validation accuracy is the curve's max"


def test_reference_reads_the_test_set_once_per_final_model(tiny_reference):
    _, result, sizes = tiny_reference
    n_val, n_test = result["data"]["val_images"], result["data"]["test_images"]
    assert (n_val, n_test) == (40, 30)
    cached = 1  # head_only scores its test features, extracted once per seed, without evaluate
    assert sizes.count(n_test) == (len(result["experiments"]) - cached) * 2
    assert sizes.count(n_val) > sizes.count(n_test), "every choice (the scratch epoch) is made on validation"


def test_reference_json_schema_and_checks(tiny_reference):
    _, result, _ = tiny_reference
    for key in ("machine", "uptime_start", "uptime_end", "experiments", "phenomena", "equal_compute", "peft",
                "head_only_caching", "data", "seeds", "date", "total_seconds"):
        assert key in result, key
    assert {"load_average", "text", "time"} <= set(result["uptime_start"]) and result["machine"]["cpu_cores"] >= 1
    checks = result["phenomena"]
    assert set(checks) == {"head_only_minus_scratch_points", "head_only_minus_scratch_equal_epochs_points",
                           "full_ft_large_lr_accuracy", "full_ft_mid_lr_accuracy", "warmup_rescue_points",
                           "full_ft_small_lr_minus_head_only_points", "staged_minus_head_only_points"}
    assert checks["head_only_minus_scratch_points"]["goal"] == ">= 10"
    assert checks["warmup_rescue_points"]["goal"] == ">= 10" and checks["full_ft_large_lr_accuracy"]["goal"] == "<= 0.20"
    e = result["experiments"]
    expected = [100 * (h - s) for h, s in zip(e["head_only"]["test_acc"], e["scratch"]["test_acc"])]
    assert checks["head_only_minus_scratch_points"]["per_seed"] == [round(v, 4) for v in expected]
    assert set(result["peft"]) == {"head_only", "bitfit", "lora_r4", "lora_r16", "staged", "full_ft_small_lr"}
    caching = result["head_only_caching"]
    assert math.isclose(caching["uncached_seconds"], e["head_only_uncached"]["seconds_mean"])
    table = bench.format_reference(result)
    assert all(row["label"] in table for row in e.values()) and "±" in table and "goal >= 10" in table
    json.loads(json.dumps(result))


def test_runs_are_repeatable_after_the_loader_was_used(tmp_path):
    """TensorLoader.reseed: the same seed gives the same batches even after another run consumed the loader."""
    profile = tiny_profile()
    setup = runs.make_setup(profile, tiny_load(profile), seed=3, device="cpu")
    first = runs.run_full(setup, lr=1e-4, num_epochs=2)
    runs.run_head_uncached(setup, lr=1e-3, num_epochs=1)
    again = runs.run_full(setup, lr=1e-4, num_epochs=2)
    assert first["val_curve"] == again["val_curve"] and first["test_acc"] == again["test_acc"]


def test_phenomena_compare_the_right_experiments():
    def experiments(**acc):
        return {name: {"test_acc": values, "epochs": [10, 10]} for name, values in acc.items()}

    good = bench.phenomena(experiments(scratch=[0.6, 0.7], scratch_equal_epochs=[0.5, 0.5], head_only=[0.9, 0.9],
                                       full_ft_small_lr=[0.94, 0.94], full_ft_mid_lr=[0.2, 0.1],
                                       full_ft_mid_lr_warmup=[0.9, 0.92], full_ft_large_lr=[0.1, 0.1],
                                       staged=[0.92, 0.9]))
    assert all(c["met"] for c in good.values() if c["goal"]) and good["full_ft_mid_lr_accuracy"]["met"] is None
    assert math.isclose(good["head_only_minus_scratch_points"]["value"], 25)
    assert good["warmup_rescue_points"]["per_seed"] == [70.0, 82.0]
    bad = bench.phenomena(experiments(scratch=[0.85, 0.85], scratch_equal_epochs=[0.5, 0.5], head_only=[0.9, 0.9],
                                      full_ft_small_lr=[0.88, 0.88], full_ft_mid_lr=[0.8, 0.8],
                                      full_ft_mid_lr_warmup=[0.85, 0.85], full_ft_large_lr=[0.3, 0.3],
                                      staged=[0.89, 0.89]))
    assert not any(c["met"] for c in bad.values() if c["goal"])


def test_mean_std_of_one_seed_has_no_std():
    assert bench.mean_std([0.5]) == (0.5, None)
    mean, std = bench.mean_std([0.5, 0.7])
    assert math.isclose(mean, 0.6) and math.isclose(std, 0.1414213562, rel_tol=1e-6)


# ------------------------------------------------------------------------------------------- label budget

def test_crossing_points_find_where_the_lead_changes():
    budgets = [2, 5, 10, 20, 50]
    head = [0.60, 0.75, 0.85, 0.88, 0.90]
    full = [0.40, 0.70, 0.85, 0.93, 0.97]
    crossings = bench.crossing_points(budgets, head, full)
    assert [c["between"] for c in crossings] == [[5, 20]], "a tie at 10 is skipped, not a crossing"
    c = crossings[0]
    # -5 points at 5, +5 at 20: half way on a log scale is sqrt(5 * 20) = 10
    assert c["leader"] == "second" and math.isclose(c["at"], 10, rel_tol=1e-3)
    assert bench.crossing_points(budgets, full, head)[0]["leader"] == "first"
    assert bench.crossing_points(budgets, head, [h + 0.01 for h in head]) == []
    there_and_back = bench.crossing_points([1, 2, 4], [0.5, 0.5, 0.5], [0.4, 0.6, 0.4])
    assert [c["between"] for c in there_and_back] == [[1, 2], [2, 4]]
    assert [c["leader"] for c in there_and_back] == ["second", "first"]


def test_crossing_statements_name_the_winner():
    budgets = [2, 5]
    statement = label_budget.describe_crossing("head_only", "full_ft", budgets, [-3.0, 4.0],
                                               bench.crossing_points(budgets, [0.5, 0.5], [0.47, 0.54]))
    assert statement.startswith("full fine-tune overtakes head only (cached features) between 2 and 5")
    assert label_budget.describe_crossing("head_only", "full_ft", budgets, [-1, -2], []).startswith(
        "no crossing: head only (cached features) ahead at every budget")
    assert "tie at every budget" in label_budget.describe_crossing("head_only", "staged", budgets, [0, 0], [])


def test_small_budgets_get_at_least_the_reference_steps():
    assert label_budget.stretched_epochs(10, steps_per_epoch=7, reference_steps_per_epoch=7) == 10
    assert label_budget.stretched_epochs(10, steps_per_epoch=1, reference_steps_per_epoch=7) == 70
    assert label_budget.stretched_epochs(10, steps_per_epoch=16, reference_steps_per_epoch=7) == 10
    assert label_budget.stretch(dict(lr=1e-3, head_epochs=2, num_epochs=3), 2, 3) == dict(
        lr=1e-3, head_epochs=3, num_epochs=5)


@pytest.fixture(scope="module")
def tiny_budget(tmp_path_factory):
    """The label-budget experiment through the CLI at the tiny size: budgets 1 and 2, seeds 0 and 1."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("budget") / "label_budget.json"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("FINETUNE_OVERRIDES", TINY)
        real = cli.run_label_budget
        monkeypatch.setattr(cli, "run_label_budget", lambda *a, **k: real(*a, load=tiny_load, **k))
        printed = cli.main(["--label-budget", "--profile", "quick", "--budgets", "2", "1", "--seeds", "0", "1",
                            "--device", "cpu", "--json", str(path)])
    return path, printed


def test_label_budget_json_holds_every_run_with_its_budget(tiny_budget):
    path, _ = tiny_budget
    result = json.loads(path.read_text())
    assert result["kind"] == "label_budget" and result["budgets"] == [1, 2] and result["seeds"] == [0, 1]
    assert result["strategies"] == ["head_only", "staged", "full_ft", "scratch"]
    assert len(result["runs"]) == 2 * 2 * 4
    for run in result["runs"]:
        assert {"strategy", "labels_per_class", "seed", "train_images", "epochs", "steps", "lr", "seconds",
                "val_acc", "test_acc", "trainable_params"} <= set(run)
        assert run["train_images"] == 10 * run["labels_per_class"] and run["seconds"] > 0
    stretched = [r for r in result["runs"] if r["strategy"] == "full_ft"]
    assert {r["labels_per_class"]: r["epochs"] for r in stretched} == {1: 1, 2: 1}, "1 step per epoch at both sizes"
    assert result["settings"]["scratch"]["lr"] == 1e-3
    assert {"text", "load_average"} <= set(result["uptime_end"]) and result["machine"]["device"] == "cpu"
    curves = result["curves"]["test_acc"]
    assert set(curves) == set(result["strategies"]) and set(curves["full_ft"]) == {"1", "2"}
    assert all(len(seeds) == 2 for seeds in curves["staged"].values())
    full = result["summary"]["full_ft"][1]
    assert full["labels_per_class"] == 2 and math.isclose(full["test_acc_mean"], sum(curves["full_ft"]["2"]) / 2)
    assert set(result["crossings"]["test_acc"]) == {"full_ft_vs_head_only", "staged_vs_head_only",
                                                   "full_ft_vs_staged"}
    for name, block in result["crossings"]["test_acc"].items():
        assert result["phenomena"][f"crossing_{name}"]["statement"] == block["statement"]


def test_label_budget_cli_prints_the_table_and_writes_the_plot(tiny_budget, capsys):
    path, result = tiny_budget
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert result["command"].startswith("python -m finetune_helpers.bench --label-budget")
    text = label_budget.format_label_budget(result)
    assert "labels/class" in text and "crossing_full_ft_vs_head_only" in text


def test_plot_label_budget_draws_mean_and_std_per_budget():
    ax = plot_label_budget({"head": {"10": [0.8, 0.9], "2": [0.5, 0.7], "5": [0.6]}}, chance=0.1)
    (bars,) = ax.containers
    line, _, (segments,) = bars.lines
    assert list(line.get_xdata()) == [2.0, 5.0, 10.0] and list(line.get_ydata()) == pytest.approx([0.6, 0.6, 0.85])
    spans = [seg[1][1] - seg[0][1] for seg in segments.get_segments()]
    assert spans == pytest.approx([2 * 0.1414214, 0.0, 2 * 0.0707107], rel=1e-5), "± one sample std"
    assert ax.get_xscale() == "log" and ax.lines[-1].get_ydata()[0] == 0.1
    matplotlib.pyplot.close("all")


# ------------------------------------------------------------------------------------------ CLI and package

@pytest.mark.parametrize("argv, message", [
    (["--gpu", "--label-budget"], "not allowed with argument"),
    (["--budgets", "5"], "--budgets belongs to the label-budget experiment"),
    (["--compile"], "--size and --compile belong to the pipeline benchmark"),
    (["--size", "tiny"], "--size and --compile belong to the pipeline benchmark"),
    (["--seeds", "0", "0"], "--seeds must be distinct"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--profile", "huge"], "Unknown profile 'huge'"),
    (["--label-budget", "--budgets", "5", "500"], "labels_per_class=500 is impossible"),
    (["--label-budget", "--budgets", "5", "5"], "Labels per class repeat"),
    (["--label-budget", "--budgets", "0"], "must be positive ints"),
])
def test_cli_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_every_bench_module_documents_its_public_functions():
    """The package's docstring check walks finetune_helpers' top level; this covers the bench subpackage."""
    for info in pkgutil.iter_modules(finetune_helpers.bench.__path__):
        module = importlib.import_module(f"finetune_helpers.bench.{info.name}")
        assert module.__doc__, info.name
        for name, obj in vars(module).items():
            if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__ and (
                    inspect.isfunction(obj) or inspect.isclass(obj)):
                assert obj.__doc__ and obj.__doc__.strip().splitlines()[0], f"{info.name}.{name}"
