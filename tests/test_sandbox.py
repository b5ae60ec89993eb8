"""Sandboxed autograding: attacks on the grading machine are contained, limits are reported, nothing leaks.

The slow checks read the probe course's hostile batch (conftest.probe_course: the real scripts/autograde_all.py,
two jobs, the bubblewrap sandbox). GRADING_TEST_DEFENCE_OFF=1 runs that batch without the sandbox, to see them fail.
"""
import json
import os
import signal
import subprocess
import sys
import time

import nbformat
import pytest

from conftest import PROBE, PROBE_SECRETS, REPO, load_script, new_probe_course, submit, tool_env, with_cell
from sandbox_fixtures import (DEFENCE_OFF, FORK_BOUND, hook_cases, hostile_cases, lingering, probe_batch_options,
                              require_sandbox)
from test_nbgrader_workflow import html_text

ATTACKS = sorted(hostile_cases("/root", 1, "m"))
BLOCKED = ["hostile_disk_filler", "hostile_fork_bomb", "hostile_memory_hog", "hostile_network", "hostile_read_others",
           "hostile_tamper_gradebook", "hostile_write_outside"]  # those whose notebook can see success
STATUS = {"hostile_fork_bomb": "processes", "hostile_memory_hog": "memory", "hostile_disk_filler": "disk",
          "hostile_output_flood": "output", "hostile_wall_hog": "wall time",
          "hostile_hung_kernel": "kernel unresponsive"}


def outputs_text(course, student):
    """All output text of STUDENT's autograded probe notebook (what formgrader shows and feedback is made of)."""
    path = course.root / "autograded" / student / PROBE / f"{PROBE}.ipynb"
    assert path.exists(), f"{student} was not autograded:\n{course.batches['hostile'][1][-3000:]}"
    return json.dumps([c.get("outputs", []) for c in nbformat.read(path, as_version=4).cells])


def printed(course, student):
    """What STUDENT's autograded notebook printed (stream outputs only: tracebacks quote the source)."""
    path = course.root / "autograded" / student / PROBE / f"{PROBE}.ipynb"
    assert path.exists(), f"{student} was not autograded:\n{course.batches['hostile'][1][-3000:]}"
    cells = nbformat.read(path, as_version=4).cells
    return "".join(o.get("text", "") for c in cells for o in c.get("outputs", []) if o.output_type == "stream")


def table_line(course, student):
    """STUDENT's line of the hostile batch's score table."""
    lines = [line for line in course.batches["hostile"][1].splitlines() if line.startswith(student + " ")]
    assert lines, f"{student} missing from the score table:\n{course.batches['hostile'][1][-3000:]}"
    return lines[0]


def hidden_spellings():
    """The probe's hidden-test line as printed, in repr() and in JSON (how a hook would print it)."""
    line = PROBE_SECRETS["hidden"]
    return {line, repr(line)[1:-1], json.dumps(line)[1:-1]}


@pytest.mark.slow
@pytest.mark.parametrize("student", BLOCKED)
def test_attack_was_attempted_and_blocked(probe_course, student):
    """Each attack ran (it printed its attempt) and did not get through (no SUCCEEDED line)."""
    text = printed(probe_course, student)
    assert "attempt " in text, f"{student}'s attack did not run: {outputs_text(probe_course, student)[:1500]}"
    assert "SUCCEEDED" not in text, f"{student}'s attack got through the sandbox: {text[:3000]}"


@pytest.mark.slow
@pytest.mark.parametrize("student", ATTACKS)
def test_attack_is_recorded_with_score_and_status(probe_course, student):
    """Each attack's submission is recorded with its expected score; a limit it hit is named in the table."""
    from conftest import code_scores
    expected = hostile_cases("/root", 1, "m")[student][1]
    score = code_scores(probe_course.root).get((student, PROBE))
    if expected is None:  # how many cells ran before the wall limit depends on the machine; the last never does
        grade = probe_course.snapshots["after_hostile"][student, PROBE, PROBE, "test_cube"]
        assert score is not None and grade[0] == 0, (score, grade)
    else:
        assert score == (expected, 3.0), table_line(probe_course, student)
    line = table_line(probe_course, student)
    assert " ok" in line and "FAILED" not in line, f"{student}: {line}"
    assert STATUS.get(student, "ok") in line, f"{student}: the table should name the {STATUS.get(student)} limit: {line}"


@pytest.mark.slow
def test_nothing_reached_the_network(probe_course):
    """No submission connected to a server on the grading machine's 127.0.0.1."""
    assert probe_course.extras["connections"] == [], f"connections from submissions: {probe_course.extras}"


@pytest.mark.slow
def test_nothing_was_written_outside_the_sandbox(probe_course):
    """The files the attack tried to plant in the course, another submission and beside the course do not exist."""
    root = probe_course.root
    planted = [root / "planted.txt", root.parent / "planted.txt",
               root / "submitted" / "good_solver" / PROBE / "planted.txt"]
    assert not [p for p in planted if p.exists()], f"planted files: {[p for p in planted if p.exists()]}"


@pytest.mark.slow
def test_no_process_outlives_its_notebook(probe_course):
    """The process a submission started in a new session is gone once the batch has finished."""
    assert lingering(probe_course.extras["marker"]) == [], "a process started by a submission is still running"


@pytest.mark.slow
def test_fork_bomb_was_stopped_by_the_process_limit(probe_course):
    """The fork bomb could not start its FORK_BOUND processes."""
    text = printed(probe_course, "hostile_fork_bomb")
    forked = int(text.split("forked ", 1)[1].split()[0])
    assert forked < FORK_BOUND, f"the fork bomb started {forked} processes"


@pytest.mark.slow
def test_output_flood_is_stored_truncated(probe_course):
    """A 150 MB print is stored (autograded notebook, feedback) as at most a few MB, with a note."""
    nb = probe_course.root / "autograded" / "hostile_output_flood" / PROBE / f"{PROBE}.ipynb"
    page = probe_course.root / "feedback" / "hostile_output_flood" / PROBE / f"{PROBE}.html"
    assert nb.stat().st_size < 4e6 and page.stat().st_size < 4e6, (nb.stat().st_size, page.stat().st_size)
    assert "output truncated" in nb.read_text(), "the truncated cell carries no note"


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(hook_cases()))
def test_kernel_hooks_do_not_leak_hidden_tests(probe_course, student):
    """Learner code that prints every later cell leaks no hidden-test line into feedback or the stored outputs."""
    from conftest import code_scores
    assert code_scores(probe_course.root)[student, PROBE] == (hook_cases()[student][1], 3.0)
    stored = outputs_text(probe_course, student)
    assert "assert square(3) == 9" in stored, "the hook did not print the test cells: the check would be vacuous"
    page = probe_course.root / "feedback" / student / PROBE / f"{PROBE}.html"
    for where, text in (("stored outputs", stored), ("feedback", html_text(page)),
                        ("feedback source", page.read_text())):
        found = [s for s in hidden_spellings() if s in text]
        assert not found, f"{student}: hidden test {found} in the {where}"


def test_autograde_refuses_without_a_sandbox(tmp_path):
    """Without bwrap on PATH the runner exits 2 and says how to get a sandbox; UNSAFE_NO_SANDBOX=1 proceeds."""
    runner = [sys.executable, str(REPO / "scripts" / "autograde_all.py"), "--root", str(tmp_path)]
    env = {**tool_env(), "PATH": os.path.dirname(sys.executable)}  # no /usr/bin: no bwrap
    env.pop("UNSAFE_NO_SANDBOX", None)
    refused = subprocess.run(runner, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "apt-get install bubblewrap" in refused.stderr, refused.stderr
    assert "UNSAFE_NO_SANDBOX=1" in refused.stderr, refused.stderr
    unsafe = subprocess.run(runner, env={**env, "UNSAFE_NO_SANDBOX": "1"}, capture_output=True, text=True,
                            timeout=120)
    assert unsafe.returncode == 0 and "WARNING" in unsafe.stderr, unsafe.stderr


def test_limits_reach_the_worker():
    """Every runner limit becomes an nbgrader option of SandboxedExecute or SandboxKernelManager."""
    runner = load_script("autograde_all")
    args, extra, opts = runner.parse_args(["--jobs", "3", "--memory", "1G", "--processes", "9", "--tmp-size",
                                           "5M", "--home-size", "6M", "--wall-limit", "7", "--output-limit",
                                           "8", "--Execute.timeout=4"])
    flags = runner.limit_flags(opts, "r.json", 1234)
    for flag in ("--SandboxKernelManager.memory_limit=1G", "--SandboxKernelManager.process_limit=9",
                 "--SandboxKernelManager.tmp_size=5M", "--SandboxKernelManager.home_size=6M",
                 "--SandboxedExecute.wall_limit=7", "--SandboxedExecute.output_limit=8",
                 "--SandboxKernelManager.uid=1234"):
        assert flag in flags, (flag, flags)
    assert extra == ["--Execute.timeout=4"] and opts.jobs == 3


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_running_and_rerun_continues(tmp_path):
    """Ctrl-C mid-notebook: exit 130, no kernel or child left, nothing recorded; the next run grades it."""
    require_sandbox()
    root = new_probe_course(tmp_path / "course")
    source = nbformat.read(root / "solutions" / PROBE / f"{PROBE}.ipynb", as_version=4)
    marker = f"grading-ctrl-c-{os.getpid()}"
    hang = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(90)',"
            f" '{marker}'], start_new_session=True)\ntime.sleep(8)\ndef square(x):\n    return x * x")
    submit(root, "slow", PROBE, {f"{PROBE}.ipynb": with_cell(source, "square", hang)})
    cmd = [sys.executable, str(REPO / "scripts" / "autograde_all.py"), "--root", str(root), "--Execute.timeout=60",
           *probe_batch_options()]
    proc = subprocess.Popen(cmd, cwd=root, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while not lingering(marker) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert lingering(marker), "the submission's child never started"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "INTERRUPTED" in out, out[-2000:]
    time.sleep(1)
    assert lingering(marker) == [], "Ctrl-C left the submission's processes running"
    assert not (root / "autograded" / "slow" / PROBE / f"{PROBE}.ipynb").exists(), "a half-graded notebook stayed"
    again = subprocess.run(cmd, cwd=root, env=tool_env(), capture_output=True, text=True, timeout=600)
    line = [x for x in again.stdout.splitlines() if x.startswith("slow ")]
    assert again.returncode == 0 and line and "3/3 auto" in line[0], again.stdout[-2000:]
