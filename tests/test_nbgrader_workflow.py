"""The instructor workflow: course/ generation, no leaked secrets, autograde round trip, hostile submissions."""
import html
import json
import os
import re
import sys

import nbformat
import pytest

from conftest import (COURSE, EXPECTED_ASSIGNMENTS, PROBE, PROBE_SECRETS, SOLUTIONS, assignment_names,
                      code_scores, new_course, new_probe_course, nbgrader, probe_source,
                      probe_submissions)

REGIONS = (("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"), ("BEGIN SOLUTION", "END SOLUTION"),
           ("BEGIN MARK SCHEME", "END MARK SCHEME"))
MARKERS = [begin for begin, _ in REGIONS]
SKIP_PARTS = {".ipynb_checkpoints", "__pycache__"}


def files_under(folder):
    """{relative path: bytes} of every file below FOLDER."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not SKIP_PARTS.intersection(p.parts)}


def secret_lines(nb):
    """Lines of source notebook NB that only occur inside hidden-test, solution or mark-scheme regions."""
    inside, outside = set(), set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        whole_cell_is_answer = meta.get("solution") and not any(m in cell.source for m in MARKERS)
        end = None
        for line in cell.source.splitlines():
            text = line.strip()
            begin = next((b for b, _ in REGIONS if b in text), None)
            if end is None and begin:
                end = dict(REGIONS)[begin]
            elif end and end in text:
                end = None
            else:
                (inside if end or whole_cell_is_answer else outside).add(text)
    return {t for t in inside - outside if len(t) >= 10 and re.search(r"[A-Za-z]", t)}


def notebook_text(nb):
    """All text a learner can see in notebook NB: cell sources and outputs."""
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            parts.extend(str(v) for v in out.get("data", {}).values())
            parts.extend([out.get("text", ""), out.get("evalue", ""), *out.get("traceback", [])])
    return "\n".join(parts)


def html_text(path):
    """Visible text of an HTML file (tags removed, entities decoded), so highlighted code reads as typed."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


def visible_lines(text):
    """Stripped lines of TEXT, traceback prefixes ('----> 3 ', '      4 ') removed."""
    return {re.sub(r"^(?:-+>\s*)?\d+\s+", "", line.strip()) for line in text.splitlines()}


def leaks(text, secrets, markers=MARKERS):
    """The region markers that occur in TEXT, and the secret lines that stand as a line of it.

    Whole lines, not substrings: instructions may quote a call from the solution inside a sentence."""
    return [m for m in markers if m in text] + sorted(secrets & visible_lines(text))


# ---------------------------------------------------------------- layout and generation (fast)

def test_expected_assignments_exist():
    """solutions/ and course/ hold exactly the course's assignments (EXPECTED_ASSIGNMENTS)."""
    for folder in (SOLUTIONS, COURSE):
        found = assignment_names(folder)
        assert tuple(found) == EXPECTED_ASSIGNMENTS, (
            f"{folder.name}/ has assignments {found}, expected {list(EXPECTED_ASSIGNMENTS)}: add the missing "
            f"notebooks (solutions/NAME/NAME.ipynb, then `make course`) or update EXPECTED_ASSIGNMENTS in "
            f"tests/conftest.py.")


def test_course_is_what_nbgrader_generates(tmp_path):
    """course/ is byte-identical to `nbgrader generate_assignment` run on solutions/ (check 1)."""
    names = assignment_names(SOLUTIONS)
    root = new_course(tmp_path, names)
    if names:
        nbgrader(root, "generate_assignment", "*", "--force", "--no-db")
    expected, actual = files_under(root / "course"), files_under(COURSE)
    differ = sorted(p for p in expected.keys() | actual.keys() if expected.get(p) != actual.get(p))
    assert not differ, (f"course/ differs from what nbgrader generates from solutions/ in {differ}: "
                        f"never edit course/ by hand; run `make course` and commit course/.")


@pytest.mark.parametrize("assignment", assignment_names(SOLUTIONS))
def test_course_has_no_solutions_hidden_tests_or_rubric(assignment):
    """No solution code, hidden test or mark scheme from solutions/ appears in course/ (check 2)."""
    for src in sorted((SOLUTIONS / assignment).glob("*.ipynb")):
        released = COURSE / assignment / src.name
        assert released.exists(), f"{released} is missing: run `make course` and commit course/."
        found = leaks(notebook_text(nbformat.read(released, as_version=4)),
                      secret_lines(nbformat.read(src, as_version=4)))
        assert not found, f"{released} reveals {found}: regenerate it with `make course`."


def test_probe_release_hides_secrets(tmp_path):
    """The leak check itself sees the probe's hidden test, solution and rubric, and generation removes them."""
    source = probe_source()
    secrets = secret_lines(source)
    assert {PROBE_SECRETS["hidden"], PROBE_SECRETS["solution"], PROBE_SECRETS["rubric"]} <= secrets
    root = new_probe_course(tmp_path)
    released = nbformat.read(root / "course" / PROBE / f"{PROBE}.ipynb", as_version=4)
    assert leaks(notebook_text(released), secrets) == [], "generate_assignment leaked probe secrets"
    assert released.metadata.language_info == {"name": "python"}, (
        "course/ notebooks keep machine-specific language_info: check ClearRuntimeMetadata in nbgrader_config.py")
    stamped = [c.metadata.nbgrader.grade_id for c in released.cells if "execution" in c.metadata]
    assert not stamped, f"cells {stamped} keep execution timestamps: check ClearOutput.remove_metadata_fields"


# ---------------------------------------------------------------- hostile submissions on the probe (slow)

PROBE_EXPECTED = {student: score for student, (_, score) in probe_submissions(probe_source(), probe_source()).items()}


@pytest.mark.slow
@pytest.mark.parametrize("student", sorted(PROBE_EXPECTED))
def test_probe_submission_is_recorded_with_expected_score(probe_course, student):
    """Every probe submission, hostile ones included, has its autograded score in the gradebook (check 5)."""
    scores = code_scores(probe_course.root)
    assert (student, PROBE) in scores, (
        f"{student} has no submission in the gradebook after `make autograde`:\n"
        f"{probe_course.batches['hostile'][2][-3000:]}")
    assert scores[student, PROBE] == (PROBE_EXPECTED[student], 3.0), (
        f"{student} scored {scores[student, PROBE]}, expected ({PROBE_EXPECTED[student]}, 3.0) autograded points")


@pytest.mark.slow
def test_hostile_batch_grades_everyone_and_flags_the_dead_kernel(probe_course):
    """The batch continues past os._exit, exits 1 and names only that submission as not autograded."""
    status, table, log = probe_course.batches["hostile"]
    assert status == 1, f"autograde_all.py should exit 1 when a submission could not be graded:\n{log[-3000:]}"
    failed = sorted(line.split()[0] for line in table.splitlines() if "FAILED" in line)
    assert failed == ["hostile_os_exit"], f"expected only hostile_os_exit to be flagged, got {failed}:\n{table}"
    graded = {p.parent.parent.name for p in (probe_course.root / "autograded").glob(f"*/{PROBE}/*.ipynb")}
    submitted = {p.name for p in (probe_course.root / "submitted").iterdir()}
    assert graded == submitted - {"hostile_os_exit"}, f"not autograded: {sorted(submitted - graded)}"
    assert probe_course.batches["reference"][0] == 0, probe_course.batches["reference"][2][-3000:]


@pytest.mark.slow
def test_deleted_test_cell_is_left_for_the_instructor(probe_course):
    """A deleted read-only test cell earns nothing automatically and is marked as needing manual grading."""
    auto, manual, _ = probe_course.snapshots["after_hostile"]["hostile_deleted_test", PROBE, PROBE, "test_square"]
    assert (auto, manual) == (None, None), f"deleted test cell got auto={auto}, manual={manual}"
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{probe_course.root / 'gradebook.db'}") as gb:
        grade = gb.find_grade("test_square", PROBE, PROBE, "hostile_deleted_test")
        assert grade.needs_manual_grade, "formgrader should list the deleted test cell as needing manual grading"


@pytest.mark.slow
def test_hostile_batch_leaves_other_grades_unchanged(probe_course):
    """Grades recorded before the forced batch with the hostile submissions, a manual grade included, stay equal."""
    before, after = probe_course.snapshots["before_hostile"], probe_course.snapshots["after_hostile"]
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    assert not changed, f"grades changed by autograding other students: {changed}"
    assert before["good_solver", PROBE, PROBE, "written_a"][1] == 1.0, "the manual grade was not recorded"


@pytest.mark.slow
def test_probe_feedback_hides_hidden_tests_rubric_and_solutions(probe_course):
    """Feedback HTML never shows hidden tests or the rubric; a blank submission's shows no solution (check 2)."""
    secrets = secret_lines(probe_source())
    not_for_anyone = {PROBE_SECRETS["hidden"], PROBE_SECRETS["rubric"]}
    pages = probe_course.feedback()
    submitted = {p.name for p in (probe_course.root / "submitted").iterdir()}
    assert len(pages) == len(submitted) - 1, f"expected feedback for every graded student, got {pages}"
    hidden = PROBE_SECRETS["hidden"]
    for page in pages:  # also inside a line, as learner code that prints later cells would show it (repr, JSON)
        found = [s for s in {hidden, repr(hidden)[1:-1], json.dumps(hidden)[1:-1]} if s in html_text(page)]
        assert not found, f"{page} reveals the hidden test {found}: check ScrubHiddenTests (scripts/grading)"
        if "good_blank" in page.parts:
            found = leaks(html_text(page), secrets)
        else:  # others submitted solution code themselves: they may see it, never the hidden tests or rubric
            found = leaks(html_text(page), not_for_anyone, ["BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME"])
        assert not found, f"{page} reveals {found}: check GenerateFeedback.preprocessors in nbgrader_config.py"


# ---------------------------------------------------------------- the real notebooks, autograded once (slow)

@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_names(SOLUTIONS))
def test_solutions_get_full_marks(real_course, assignment):
    """The solutions, submitted as a student, get every autograded point (check 5)."""
    score, max_score = code_scores(real_course.root).get(("solutions", assignment), (None, None))
    assert max_score, f"{assignment}: not autograded or has no autograded test cells ({score}/{max_score})"
    assert score == max_score, (
        f"{assignment}: solutions scored {score}/{max_score}. A test cell fails on the solution, or prints to "
        f"stderr (nbgrader gives 0 for any stderr output in a test cell: warnings, tqdm bars). See "
        f"{real_course.autograded('solutions', assignment)}")


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_names(SOLUTIONS))
def test_blank_release_scores_zero(real_course, assignment):
    """The unedited student notebook gets 0 autograded points (check 5)."""
    score, max_score = code_scores(real_course.root).get(("blank", assignment), (None, None))
    assert max_score and score == 0, f"{assignment}: blank release scored {score}/{max_score}, expected 0"


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_names(SOLUTIONS))
def test_blank_feedback_hides_secrets(real_course, assignment):
    """Feedback on the blank submission shows no solution, hidden test or rubric (check 2)."""
    pages = [p for p in real_course.feedback("blank") if p.parent.name == assignment]
    assert pages, f"no feedback generated for {assignment}"
    for page in pages:
        source = nbformat.read(real_course.root / "solutions" / assignment / f"{page.stem}.ipynb", as_version=4)
        public = notebook_text(nbformat.read(real_course.root / "course" / assignment / f"{page.stem}.ipynb",
                                             as_version=4))
        # a call quoted in the released instructions (a table, a sentence) is no secret wherever it shows
        found = leaks(html_text(page), {line for line in secret_lines(source) if line not in public})
        assert not found, f"{page} reveals {found}: check GenerateFeedback.preprocessors in nbgrader_config.py"


# ---------------------------------------------------------------- JupyterLab with the nbgrader extensions (check 6)

def test_jupyterlab_serves_nbgrader_extensions(tmp_path, jupyter_server):
    """Headless JupyterLab on 127.0.0.1 in a course directory answers formgrader, validate and assignment list."""
    root = new_probe_course(tmp_path / "course_root")
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    allow_root = ["--allow-root"] if os.geteuid() == 0 else []
    server = jupyter_server(lambda port, token: [
        jupyter, "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
        *allow_root], root)

    status, body = server.request("/formgrader/api/assignments")
    assert status == 200, f"formgrader API answered {status}: is its server extension enabled?\n{body[:300]}"
    assert [a["name"] for a in json.loads(body)] == [PROBE], f"formgrader lists {body[:500]}"
    status, body = server.request("/formgrader")
    assert status == 200 and "formgrader" in body.lower(), f"formgrader page answered {status}"
    status, body = server.request("/assignments/validate", {"path": f"course/{PROBE}/{PROBE}.ipynb"})
    assert status == 200 and json.loads(body)["success"], f"validate extension answered {status}: {body[:500]}"
    assert "failed" in json.dumps(json.loads(body)["value"]).lower(), f"blank probe should fail validation: {body}"
    status, body = server.request("/assignments?course_id=finetune-course")
    assert status == 200 and "success" in json.loads(body), f"assignment_list extension answered {status}"
    status, body = server.request("/lab/api/extensions")
    names = {e["name"]: e.get("enabled") for e in json.loads(body)}
    assert names.get("jupyter-nbgrader"), f"the @jupyter/nbgrader lab extension is not enabled: {names}"
    assert f"{server.base}/lab" in server.log(), "the server does not report listening on 127.0.0.1"
