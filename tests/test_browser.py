"""The learner's and the instructor's paths in a real browser: headless Debian Chromium, driven by Playwright.

Learner: JupyterLab started by `make lab` (workspace synced from course/); every notebook renders; a solved copy
of 01_freezing runs from Run ▸ Run All Cells with figures and no error and passes nbgrader's Validate button; the
blank notebook stops at its first exercise with NotImplementedError. Instructor: `make formgrader` after a probe
submission is autograded shows the submission, its score and the manual-grading view of a written answer.
Screenshots and console logs go to test-artifacts/browser/; any console error not allow-listed fails the test.
"""
import re
import secrets
import sys
import time
from pathlib import Path

import nbformat
import pytest

from browser_fixtures import (ARTIFACTS, RUN_TIMEOUT_MS, VIEWPORT, error_outputs, fresh_artifacts, launch_chromium,
                              open_dialogs, open_notebook, recorded_page, require, run_all_from_menu, show)
from conftest import (COURSE, PROBE, REPO, SOLUTIONS, JupyterServer, autograde_batch, free_port, new_probe_course,
                      probe_source, probe_submissions, submit)

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pinned in pyproject.toml; `require` fails on CI and skips elsewhere
    sync_playwright = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FAST = "01_freezing"                                   # the fastest notebook: the one run end to end in Lab
NOTEBOOKS = sorted(p.relative_to(COURSE).as_posix() for p in COURSE.glob("*/*.ipynb"))
STUDENTS = ("good_solver", "good_partial")             # probe submissions shown in formgrader (conftest's cases)
MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


def start_with_make(target, cwd, settings, log_name, *make_vars):
    """Start JupyterLab with the Makefile's TARGET in CWD on a free port with a token; wait until it answers."""
    port, token = free_port(), secrets.token_hex(16)
    cmd = ["make", "-s", "-f", REPO / "Makefile", "-o", ".venv/.installed-pyproject", target,  # never reinstall
           f"BIN={Path(sys.executable).parent}", f"PORT={port}", *make_vars]
    with pytest.MonkeyPatch.context() as env:  # JupyterServer copies os.environ when it starts the command
        env.setenv("JUPYTER_TOKEN", token)
        env.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings / "settings"))      # Lab's defaults, not the
        env.setenv("JUPYTERLAB_WORKSPACES_DIR", str(settings / "workspaces"))  # developer's own settings
        no_news_prompt(settings / "settings")
        server = JupyterServer(cmd, cwd, port, token, ARTIFACTS / f"{log_name}.log")
    return server


def no_news_prompt(settings_dir):
    """Answer Lab's "notified about official Jupyter news?" toast (no) so that it does not cover the screenshots."""
    path = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"fetchNews": "false"}\n')


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the whole module."""
    require(sync_playwright is not None, "Python playwright is not installed (pip install -e . installs it)")
    fresh_artifacts()
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    """A fresh browser context (cookies, storage) per test."""
    ctx = browser.new_context(viewport=VIEWPORT)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    """`make lab` on a temporary workspace (synced from course/ by the recipe), plus a solved copy of FAST."""
    tmp = tmp_path_factory.mktemp("lab")
    server = start_with_make("lab", REPO, tmp, "lab-server", f"WORKSPACE={tmp / 'workspace'}",
                             "LAB_ARGS=--no-browser")
    try:
        server.wait_ready()
        server.workspace = tmp / "workspace"
        nbformat.write(solved_copy(FAST), server.workspace / FAST / f"{FAST}_solved.ipynb")
        yield server
    finally:
        server.stop()


def solved_copy(name):
    """The learner's notebook NAME with every answer cell filled in from the instructor's solution."""
    release = nbformat.read(COURSE / name / f"{name}.ipynb", as_version=4)
    source = nbformat.read(SOLUTIONS / name / f"{name}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            assert meta["grade_id"] in answers, f"course/{name} has answer cell {meta['grade_id']}, solutions/ not"
            cell.source = "\n".join(line for line in answers[meta["grade_id"]].splitlines() if not MARKER.match(line))
    return release


def first_exercise(nb):
    """(index of the first code cell the learner writes, index of the first test cell after it)."""
    def is_(cell, key):
        return cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get(key)
    answer = next(i for i, c in enumerate(nb.cells) if is_(c, "solution"))
    return answer, next(i for i, c in enumerate(nb.cells) if i > answer and is_(c, "grade") and not is_(c, "solution"))


def describe_errors(shown):
    """'cell N: last lines of its error' for every cell of SHOWN with an error output."""
    return "\n".join(f"cell {c['index']}: {err.strip()[-600:]}" for c in shown for err in error_outputs(c))


# ---------------------------------------------------------------- the learner

@pytest.mark.parametrize("path", NOTEBOOKS)
def test_workspace_notebook_renders_in_lab(path, lab, context):
    """Check that each workspace notebook opens in Lab: every cell shown, markdown rendered, nbgrader's tools there."""
    assert (lab.workspace / path).is_file(), f"make lab did not copy {path} into the workspace"
    nb = nbformat.read(lab.workspace / path, as_version=4)
    rec = recorded_page(context, f"learner-open-{Path(path).stem}")
    shown = open_notebook(rec, lab, path, len(nb.cells))
    rec.shot("opened")
    assert not open_dialogs(rec.page), f"{path}: Lab shows a dialog or error: {open_dialogs(rec.page)}"
    assert [c["kind"] for c in shown] == [c.cell_type for c in nb.cells], f"{path}: cells shown differ from the file"
    unrendered = [c["index"] for c in shown if not c["rendered"]]
    assert not unrendered, f"{path}: markdown cells {unrendered} are not rendered"
    assert rec.page.get_by_role("menuitem", name="Nbgrader", exact=True).count() == 1, "no Nbgrader menu"
    assert rec.page.locator(".validate-button").count() == 1, f"{path}: no Validate button in the toolbar"
    rec.assert_no_console_errors()


def test_solved_copy_runs_from_the_run_menu_and_validates(lab, context):
    """Check that a solved 01 runs by Run ▸ Run All Cells with figures and no error, and Validate says Success."""
    path = f"{FAST}/{FAST}_solved.ipynb"
    nb = nbformat.read(lab.workspace / path, as_version=4)
    rec = recorded_page(context, "learner-solved")
    open_notebook(rec, lab, path, len(nb.cells))
    start = time.perf_counter()
    shown = run_all_from_menu(rec.page)
    print(f"{path}: Run All Cells took {time.perf_counter() - start:.1f} s in Lab")
    rec.shot("ran")
    if describe_errors(shown):
        pytest.fail(f"{path} shows errors after Run All Cells:\n{describe_errors(shown)}")
    not_run = [c["index"] for c in shown if c["kind"] == "code" and not re.search(r"\[\d+\]", c["prompt"])]
    assert not not_run, f"{path}: code cells {not_run} did not run"
    figures = sum(c["images"] for c in shown)
    assert figures >= 1, f"{path}: no figure was rendered"
    show(rec.page, ".jp-OutputArea-output img")
    rec.shot("figure")
    assert not open_dialogs(rec.page), f"{path}: Lab shows a dialog or error: {open_dialogs(rec.page)}"

    rec.page.locator(".validate-button").click()  # saves the notebook, then runs `nbgrader validate` on it
    message = rec.page.locator("#validation-message")
    message.wait_for(timeout=RUN_TIMEOUT_MS)
    rec.shot("validated")
    assert "validation-success" in message.get_attribute("class"), f"Validate says: {message.inner_text()}"
    assert "Success! Your notebook passes all the tests." in message.inner_text()
    rec.page.get_by_role("button", name="Ok", exact=True).click()
    saved = nbformat.read(lab.workspace / path, as_version=4)  # what Lab saved before validating
    outputs = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path}: the saved notebook holds an error"
    assert sum("image/png" in o.get("data", {}) for o in outputs) == figures, "saved figures differ from shown"
    rec.assert_no_console_errors()


def test_blank_notebook_stops_at_the_first_exercise(lab, context):
    """Check that the blank 01 run by Run All Cells stops at its first exercise with NotImplementedError."""
    path = f"{FAST}/{FAST}.ipynb"
    nb = nbformat.read(lab.workspace / path, as_version=4)
    answer, test = first_exercise(nb)
    rec = recorded_page(context, "learner-blank")
    open_notebook(rec, lab, path, len(nb.cells))
    shown = run_all_from_menu(rec.page)
    failed = [c["index"] for c in shown if error_outputs(c)]
    show(rec.page, f'.jp-Cell[data-windowed-list-index="{(failed or [test])[0]}"]')
    rec.shot("stopped")
    if not (len(failed) == 1 and answer <= failed[0] <= test):
        pytest.fail(f"{path}: expected one error, between the first exercise (cell {answer}) and its test "
                    f"(cell {test}); errors in cells {failed}:\n{describe_errors(shown)}")
    assert "NotImplementedError" in error_outputs(shown[failed[0]])[-1], describe_errors(shown)
    code = [c for c in shown if c["kind"] == "code"]
    not_run = [c["index"] for c in code if c["index"] <= failed[0] and not re.search(r"\[\d+\]", c["prompt"])]
    assert not not_run, f"{path}: cells {not_run} before the error did not run"
    ran_after = [c["index"] for c in code if c["index"] > failed[0] and re.search(r"\[\d+\]", c["prompt"])]
    assert not ran_after, f"{path}: Run All went on after the error: cells {ran_after} ran"
    rec.assert_no_console_errors()


# ---------------------------------------------------------------- the instructor

@pytest.fixture(scope="module")
def formgrader(browser, tmp_path_factory):
    """A probe course with two autograded submissions, served by `make formgrader` in its directory."""
    tmp = tmp_path_factory.mktemp("formgrader")
    root = new_probe_course(tmp / "course")
    release = nbformat.read(root / "course" / PROBE / f"{PROBE}.ipynb", as_version=4)
    cases = probe_submissions(probe_source(), release)
    for student in STUDENTS:
        submit(root, student, PROBE, {f"{PROBE}.ipynb": cases[student][0]})
    status, out, err = autograde_batch(root, "--Execute.timeout=60")
    assert status == 0, f"autograde_all.py failed ({status}):\n{(out + err)[-3000:]}"
    server = start_with_make("formgrader", root, tmp, "formgrader-server")
    try:
        server.wait_ready()
        server.root, server.expected = root, {s: cases[s][1] for s in STUDENTS}
        server.max_score = sum(c.metadata["nbgrader"].get("points", 0) for c in probe_source().cells)
        yield server
    finally:
        server.stop()


def manual_score(root, student, grade_id):
    """The manual score the gradebook holds for STUDENT's probe cell GRADE_ID."""
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return gb.find_grade(grade_id, PROBE, PROBE, student).manual_score


def test_formgrader_shows_the_score_and_grades_a_written_answer(formgrader, context):
    """Check that formgrader lists each autograded submission with its score and grades the written answer by hand."""
    rec = recorded_page(context, "instructor")
    page = rec.page
    page.goto(f"{formgrader.base}/formgrader?token={formgrader.token}")  # as the README says: /formgrader + token
    row = page.locator("tr", has=page.get_by_role("link", name=PROBE, exact=True))
    row.wait_for()
    rec.shot("assignments")
    row.get_by_role("link", name=str(len(STUDENTS)), exact=True).click()  # the "# Submissions" column
    for student, auto in formgrader.expected.items():
        sub = page.locator("tr", has=page.locator("td.student-id", has_text=student))
        sub.wait_for()
        score = sub.locator("td.score").inner_text().strip()
        assert score == f"{auto:g} / {formgrader.max_score:g}", f"{student}: {sub.inner_text()}"
        assert "needs manual grading" in sub.locator("td.status").inner_text()
    rec.shot("submissions")

    page.get_by_role("link", name="Manual Grading").first.click()
    page.get_by_role("link", name=PROBE, exact=True).click()     # the assignment
    page.get_by_role("link", name=PROBE, exact=True).click()     # its notebook
    page.locator("a.name-hidden").nth(len(STUDENTS) - 1).wait_for()  # the table is filled in by a script
    page.get_by_role("button", name="Show All Names").click()
    page.get_by_role("link", name="good_solver", exact=True).click()
    answer = page.locator(".panel.nbgrader_cell", has=page.locator("input#written_a"))
    answer.wait_for()
    rec.shot("manual-grading")
    assert "Model answer: freeze the stem" in answer.inner_text(), "the learner's written answer is not shown"
    assert "/ 1.0" in answer.inner_text() and "needs_manual_grade" in answer.locator("input#written_a").get_attribute(
        "class"), f"the written answer does not wait for a manual grade: {answer.inner_text()}"
    assert manual_score(formgrader.root, "good_solver", "written_a") is None
    answer.get_by_role("button", name="Full credit").click()
    deadline = time.monotonic() + 30
    while manual_score(formgrader.root, "good_solver", "written_a") != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    rec.shot("graded")
    assert manual_score(formgrader.root, "good_solver", "written_a") == 1, "Full credit did not reach the gradebook"
    rec.assert_no_console_errors()
