"""Grading throughput: autograde K copies of a solved notebook with and without the sandbox and with N jobs.

Prints submissions per minute for each setting and where one notebook's time goes (nbgrader start, kernel start,
imports, model load, training, other cells), and writes JSON with the machine and `uptime` before and after
under benchmarks/results/. A benchmark, not a test: run it on an idle machine.

Usage: python scripts/bench_grading.py [--copies 4] [--jobs 1 2] [--notebook solutions/01_freezing/01_freezing.ipynb]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import autograde_all  # noqa: E402  (scripts/ is not a package)

PHASES = (("model load", ("load_backbone", "build_model", "load_model")),
          ("training", ("fit(", "train_head(", "lr_sweep(", "head_sweep(")),
          ("imports", ("import ",)))


def uptime():
    """The `uptime` line (load averages) now."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine():
    """CPU model, cores, memory, Python and torch versions."""
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": autograde_all.cores(), "memory_mib": mem, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def make_course(notebook, copies, root):
    """A course at ROOT with NOTEBOOK's assignment generated and COPIES students who submitted it solved."""
    assignment = notebook.parent.name
    root.mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    shutil.copytree(notebook.parent, root / "solutions" / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force"], cwd=root,
                   env=autograde_all.tool_env(), check=True, capture_output=True)
    for i in range(copies):
        dest = root / "submitted" / f"student{i:03d}" / assignment
        dest.mkdir(parents=True)
        shutil.copy(notebook, dest / notebook.name)
    return [(f"student{i:03d}", assignment) for i in range(copies)]


def grade(root, pairs, jobs, sandbox):
    """Autograde PAIRS with JOBS workers; return throughput and per-submission seconds."""
    opts = autograde_all.Options(jobs=jobs, sandbox=sandbox)
    start = time.perf_counter()
    outcomes = autograde_all.run_batch(root, pairs, force=True, opts=opts)
    total = time.perf_counter() - start
    failed = [f"{s}: {o.status}" for (s, _), o in outcomes.items() if not o.ok]
    if failed:
        raise SystemExit("autograding failed: " + "; ".join(failed))
    return {"jobs": jobs, "sandbox": sandbox, "seconds": round(total, 1),
            "submissions_per_min": round(60 * len(pairs) / total, 2),
            "seconds_per_submission": [round(o.seconds, 1) for o in outcomes.values()]}


def phase(source):
    """Which part of the work a code cell is (first matching keyword)."""
    return next((name for name, words in PHASES if any(w in source for w in words)), "other cells")


def time_split(notebook, sandbox):
    """Seconds of kernel start and of each phase when NOTEBOOK runs once through nbclient, as the grader runs it."""
    from nbclient import NotebookClient
    from grading.sandbox import SandboxKernelManager

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=900, allow_errors=True,
                            resources={"metadata": {"path": str(notebook.parent)}},
                            **({"kernel_manager_class": SandboxKernelManager} if sandbox else {}))
    start = time.perf_counter()
    with client.setup_kernel():
        client.wait_for_reply(client.kc.kernel_info())
        split = {"kernel start": time.perf_counter() - start}
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                t0 = time.perf_counter()
                client.execute_cell(cell, index)
                split[phase(cell.source)] = split.get(phase(cell.source), 0.0) + time.perf_counter() - t0
    return {k: round(v, 2) for k, v in split.items()}


def kernel_start_seconds(sandbox, repeats=3):
    """Median seconds from starting a kernel (with or without the sandbox) to its first reply."""
    from nbclient import NotebookClient
    from grading.sandbox import SandboxKernelManager

    times = []
    for _ in range(repeats):
        client = NotebookClient(nbformat.v4.new_notebook(), resources={"metadata": {"path": tempfile.gettempdir()}},
                                **({"kernel_manager_class": SandboxKernelManager} if sandbox else {}))
        start = time.perf_counter()
        with client.setup_kernel():
            client.wait_for_reply(client.kc.kernel_info())
            times.append(time.perf_counter() - start)
    return round(sorted(times)[len(times) // 2], 2)


def main(argv=None):
    """Run the settings, print a summary, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="submissions per setting (%(default)s)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="parallel jobs to try (%(default)s)")
    parser.add_argument("--notebook", type=Path, default=REPO / "solutions" / "01_freezing" / "01_freezing.ipynb")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/…)")
    args = parser.parse_args(argv)
    os.environ.setdefault("FINETUNE_PROFILE", "quick")
    if problem := autograde_all.grading().sandbox.check_sandbox():
        raise SystemExit(problem)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "notebook": os.path.relpath(args.notebook.resolve(), REPO), "copies": args.copies,
              "uptime_before": uptime(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        pairs = make_course(args.notebook.resolve(), args.copies, Path(tmp, "course"))
        settings = [(1, False)] + [(jobs, True) for jobs in args.jobs]
        for jobs, sandbox in settings:
            run = grade(Path(tmp, "course"), pairs, jobs, sandbox)
            result["runs"].append(run)
            print(f"jobs={jobs} sandbox={'on ' if sandbox else 'off'}: {run['submissions_per_min']:6.2f} "
                  f"submissions/min, {run['seconds']:.0f} s for {args.copies}", flush=True)
        result["kernel_start_seconds"] = {"sandbox": kernel_start_seconds(True), "plain": kernel_start_seconds(False)}
        result["time_split_one_notebook"] = {"sandbox": time_split(args.notebook.resolve(), True),
                                             "plain": time_split(args.notebook.resolve(), False)}
    result["uptime_after"] = uptime()
    base = {(r["jobs"], r["sandbox"]): r["submissions_per_min"] for r in result["runs"]}
    result["speedup_vs_sandboxed_jobs1"] = {str(j): round(base[j, True] / base[1, True], 2)
                                            for j in args.jobs if (1, True) in base}
    result["sandbox_cost_seconds_per_notebook"] = round(60 / base[1, True] - 60 / base[1, False], 1) \
        if (1, True) in base else None
    print(json.dumps({k: result[k] for k in ("kernel_start_seconds", "time_split_one_notebook",
                                              "speedup_vs_sandboxed_jobs1", "sandbox_cost_seconds_per_notebook")},
                     indent=1))
    out = args.out or REPO / "benchmarks" / "results" / f"grading_{datetime.date.today()}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
