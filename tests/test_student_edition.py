"""The student edition (`make student-edition DEST=…`): the learner's files, no answer from solutions/, tests pass.

The leak search reuses the instructor checks' `secret_lines`/`leaks`: every line that solutions/ holds only inside
a solution, hidden-test or mark-scheme region or a model answer (the quiz key, rubrics and written answers
included) is searched for in every file of the edition. Lines that learners are given by design are not secrets
there: lines shown in the released course/ notebooks (each checked against its own source by
test_nbgrader_workflow) and lines of the finetune_helpers package, which the edition ships because later
notebooks import its versions of the functions an exercise asks for (e.g. `freeze`).
"""
import shutil
import subprocess
import sys
import sysconfig

import nbformat
import pytest

from conftest import COURSE, EXPECTED_ASSIGNMENTS, REPO, SOLUTIONS, run, tool_env
from test_nbgrader_workflow import leaks, notebook_text, secret_lines, visible_lines

INSTRUCTOR_ONLY = {"solutions", "gradebook.db", "nbgrader_config.py", "submitted", "autograded", "feedback",
                   "test_nbgrader_workflow.py", "test_notebooks.py", "test_full_profile.py", "conftest.py"}


def file_text(path):
    """What a reader of PATH sees: a notebook's sources and outputs, any other file as text."""
    if path.suffix == ".ipynb":
        try:
            return notebook_text(nbformat.read(path, as_version=4))
        except Exception:  # not a valid notebook: search its raw text instead
            pass
    return path.read_bytes().decode("utf-8", errors="replace")


def edition_files(root):
    """Relative paths of every file in the edition at ROOT, git metadata excluded."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts[:-1])


def answer_lines():
    """Secret lines of every source notebook in solutions/, less the lines learners are given by design."""
    secrets = set().union(*(secret_lines(nbformat.read(p, as_version=4)) for p in SOLUTIONS.glob("*/*.ipynb")))
    given = set().union(*(visible_lines(notebook_text(nbformat.read(p, as_version=4))) for p in
                          COURSE.glob("*/*.ipynb")),
                        *(visible_lines(p.read_text()) for p in (REPO / "finetune_helpers").rglob("*.py")))
    return secrets - given


def instructor_material(root):
    """Files under ROOT whose path names instructor-only material (solutions/, a gradebook, the nbgrader config…)."""
    return [p.as_posix() for p in edition_files(root) if INSTRUCTOR_ONLY & set(p.parts)]


def search_edition(root, secrets):
    """{relative path: leaks found} for every file under ROOT that reveals a secret line or a region marker."""
    found = {}
    for rel in edition_files(root):
        hits = leaks(file_text(root / rel), secrets)
        if hits:
            found[rel.as_posix()] = hits
    return found


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    """The student edition written by `make student-edition` into a new folder."""
    dest = tmp_path_factory.mktemp("edition") / "finetune-student"
    run(["make", "-s", "--no-print-directory", "student-edition", f"DEST={dest}"], cwd=REPO, timeout=120)
    return dest


def test_edition_holds_the_learner_files(edition):
    """The edition has every course notebook byte for byte, the package, environment, README, Makefile, git."""
    files = {p.as_posix() for p in edition_files(edition)}
    expected = {f"course/{a}/{a}.ipynb" for a in EXPECTED_ASSIGNMENTS} | {
        "README.md", "Makefile", ".gitignore", "pyproject.toml", "environment.yml", "finetune_helpers/__init__.py",
        "scripts/sync_workspace.py", "tests/test_course.py"}
    assert expected <= files, f"the edition lacks {sorted(expected - files)}"
    for name in EXPECTED_ASSIGNMENTS:
        released = COURSE / name / f"{name}.ipynb"
        assert (edition / "course" / name / f"{name}.ipynb").read_bytes() == released.read_bytes()
    staged = subprocess.run(["git", "-C", str(edition), "ls-files"], capture_output=True, text=True, check=True)
    assert set(staged.stdout.split()) == files, "the edition's git index should stage exactly its files"


def test_edition_has_no_instructor_material(edition):
    """No solutions/, gradebook, nbgrader config, submissions, feedback or instructor test file in the edition."""
    found = instructor_material(edition)
    assert not found, f"instructor material in the student edition: {found}"


def test_edition_reveals_no_answer(edition):
    """No solution, hidden-test, quiz-key, rubric or model-answer line of solutions/ is in any edition file."""
    secrets = answer_lines()
    assert secrets, "no secret lines found in solutions/: the search would prove nothing"
    found = search_edition(edition, secrets)
    assert not found, f"the student edition reveals answers: {found}"


def test_search_finds_planted_answers(edition, tmp_path):
    """The same checks flag the edition once solutions/ and a single quiz-key line are planted in it."""
    planted = tmp_path / "planted"
    shutil.copytree(edition, planted, ignore=shutil.ignore_patterns(".git"))
    shutil.copytree(SOLUTIONS, planted / "solutions")
    secrets = answer_lines()
    quiz_key = sorted(line for line in secrets if line.startswith("q1_answer"))
    assert quiz_key, f"the quiz key of 05_review is not among the secret lines: {sorted(secrets)[:20]}"
    with open(planted / "README.md", "a") as readme:
        readme.write(f"\n{quiz_key[0]}\n")
    found = search_edition(planted, secrets)
    flagged = set(found)
    expected = {f"solutions/{a}/{a}.ipynb" for a in EXPECTED_ASSIGNMENTS} | {"README.md"}
    assert expected <= flagged, f"planted answers not found in {sorted(expected - flagged)}; found {sorted(flagged)}"
    assert {f"solutions/{a}/{a}.ipynb" for a in EXPECTED_ASSIGNMENTS} <= set(instructor_material(planted))


def test_learner_makefile_runs_the_same_set_up_and_lab():
    """The learner Makefile's set-up and `make lab` recipes are the course Makefile's, line for line."""
    def recipe(text, target):
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
        body = []
        for line in lines[start + 1:]:
            if not line.startswith("\t"):
                break
            body.append(line)
        return body

    course = (REPO / "Makefile").read_text()
    learner = (REPO / "docs" / "student_edition" / "Makefile").read_text()
    for target in ("$(STAMP)", "lab"):
        assert recipe(learner, target) == recipe(course, target), f"learner `{target}` recipe drifted"


def test_edition_make_test_passes(edition, tmp_path):
    """The edition's `make test` (set-up included) passes in the edition, offline, against the edition's package.

    A learner's `make test` creates .venv and pip-installs pyproject.toml's pins from PyPI. Here .venv is created
    first without pip and sees this environment's installed packages through a .pth file, so the Makefile's own
    `pip install -e .` runs offline (PIP_NO_INDEX; PIP_NO_BUILD_ISOLATION=0 means no isolated build env) and
    installs only the edition's package."""
    work = tmp_path / "finetune-student"
    shutil.copytree(edition, work)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / ".venv")], check=True)
    site = next((work / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "course_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS", "PYTEST_ADDOPTS"}  # this run's own make/pytest options
    env = {k: v for k, v in tool_env().items() if k not in outer}
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run(["make", "test", f"PYTHON={sys.executable}", "PYTEST_ARGS="], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the edition's `make test` failed:\n{output[-4000:]}"
    assert " passed" in output and "tests/test_course.py" in output, output[-2000:]
    where = subprocess.run([str(work / ".venv" / "bin" / "python"), "-c",
                            "import finetune_helpers; print(finetune_helpers.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(work)), f"the edition's venv imports {where.stdout.strip()}"
