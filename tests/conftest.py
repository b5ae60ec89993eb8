"""Shared fixtures for the course checks: temporary nbgrader course directories, submissions and autograding."""
import functools
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
COURSE = REPO / "course"
# The course's assignments, in teaching order: the single list every check compares solutions/ and course/ with.
EXPECTED_ASSIGNMENTS = ("01_freezing", "02_head_only", "03_staged_unfreezing", "04_learning_rates", "05_review",
                        "06_parameter_efficient")
PROBE = "zz_grading_probe"          # tiny assignment the tests create for the hostile cases (never committed)
PROBE_TIMEOUT = 10                  # per-cell timeout (s) while autograding the probe: the infinite loop hits it
AUTOGRADE_SECONDS = {}              # (student, assignment) -> seconds, filled by real_course, printed at the end


def assignment_names(folder):
    """Names of assignment folders under FOLDER that hold at least one notebook."""
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and any(d.glob("*.ipynb")))


@functools.cache
def load_script(name):
    """Import scripts/NAME.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_env():
    """Environment for nbgrader, jupyter and pytest subprocesses: as `make autograde` sets it, quick profile."""
    env = {**load_script("autograde_all").tool_env(), "FINETUNE_PROFILE": "quick"}
    env.pop("FINETUNE_OVERRIDES", None)
    return env


@pytest.fixture(autouse=True)
def _profiles_as_shipped(monkeypatch):
    """A developer's $FINETUNE_OVERRIDES (a smaller trial run) must not change what the tests check."""
    monkeypatch.delenv("FINETUNE_OVERRIDES", raising=False)


def run(cmd, cwd, timeout=1800, check=True):
    """Run CMD in CWD; on failure (with check) raise AssertionError showing the output tail."""
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}) in {cwd}:\n"
                             f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def nbgrader(root, *args, **kwargs):
    """Run the nbgrader CLI of this environment in course directory ROOT."""
    return run([sys.executable, "-m", "nbgrader", *args], cwd=root, **kwargs)


def new_course(root, assignments=()):
    """Make a course directory at ROOT with the repo's nbgrader_config.py and copies of the given solutions."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    for name in assignments:
        shutil.copytree(SOLUTIONS / name, root / "solutions" / name,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return root


# ---------------------------------------------------------------- the probe assignment (hostile submissions)

def grader_cell(kind, source, grade_id, grade=False, solution=False, locked=False, points=None, task=False):
    """One nbgrader cell of KIND ('code' or 'markdown')."""
    meta = {"grade": grade, "solution": solution, "locked": locked, "task": task, "grade_id": grade_id,
            "schema_version": 3}
    if points is not None:
        meta["points"] = points
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata={"nbgrader": meta})


PROBE_SECRETS = {  # text that must never reach learners: in course/ or in feedback
    "hidden": "assert square(-7) == 49  # probe-hidden-test-marker",
    "solution": "return x * x  # probe-solution-marker",
    "rubric": "probe-rubric-marker: full marks for naming the frozen layers",
}


def probe_source():
    """Source notebook of the probe: 2-point test with a hidden part, 1-point test, a written answer, a task."""
    cell, secret = grader_cell, PROBE_SECRETS
    cells = [
        cell("markdown", "# Grading probe\nA tiny assignment used only by the tests.", "intro", locked=True),
        cell("code", "import math", "setup", locked=True),  # gets Lab's metadata.execution below
        cell("code", f"def square(x):\n    ### BEGIN SOLUTION\n    {secret['solution']}\n    ### END SOLUTION",
             "square", solution=True),
        cell("code", f"assert square(3) == 9\n### BEGIN HIDDEN TESTS\n{secret['hidden']}\n### END HIDDEN TESTS",
             "test_square", grade=True, locked=True, points=2),
        cell("code", "def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n    ### END SOLUTION", "cube",
             solution=True),
        cell("code", "assert cube(2) == 8", "test_cube", grade=True, locked=True, points=1),
        cell("markdown", "Which layers did you freeze, and why?", "written_q", locked=True),
        cell("markdown", f"=== BEGIN MARK SCHEME ===\n{secret['rubric']}\n=== END MARK SCHEME ===", "task_rubric",
             task=True, locked=True, points=1),
        cell("markdown", "Model answer: freeze the stem, it holds generic edges.", "written_a", grade=True,
             solution=True, points=1),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}  # as saved by the author's kernel
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-11-27T20:00:00.000000Z"}
    return nb


def new_probe_course(root):
    """A course directory at ROOT holding only the probe, generated into course/ and registered in gradebook.db."""
    new_course(root)
    nbformat.write(probe_source(), mkparent(root / "solutions" / PROBE / f"{PROBE}.ipynb"))
    nbgrader(root, "generate_assignment", PROBE, "--force")
    return root


def with_cell(nb, grade_id, source):
    """Copy of NB with the cell GRADE_ID's source replaced (what a learner typed)."""
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return nb
    raise KeyError(grade_id)


def without_cell(nb, grade_id):
    """Copy of NB with the cell GRADE_ID deleted."""
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != grade_id]
    return nb


def probe_submissions(source, release):
    """Submissions of the probe by name -> (notebook, expected autograded score out of 3)."""
    broken = lambda code: with_cell(source, "square", code)  # noqa: E731 (square broken, cube still right)
    return {
        "good_solver": (source, 3),
        "good_blank": (release, 0),
        "good_partial": (with_cell(source, "square", "def square(x):\n    return abs(x) * x"), 1),  # fails hidden
        "hostile_deleted_test": (without_cell(broken("def square(x):\n    return x + x"), "test_square"), 1),
        "hostile_edited_test": (with_cell(broken("def square(x):\n    return x + x"), "test_square", "pass"), 1),
        "hostile_huge_alloc": (broken("blob = bytearray(1 << 46)  # 64 TiB"), 1),
        "hostile_import_error": (broken("import no_such_module_for_grading\n" + PROBE_SECRETS["solution"]), 1),
        "hostile_infinite_loop": (broken("while True:\n    pass"), 1),
        "hostile_os_exit": (broken("import os\nos._exit(1)"), 0),
        "hostile_syntax_error": (broken("def square(x) return x * x"), 1),
    }


# ---------------------------------------------------------------- gradebook and batch helpers



def course_config():
    """The traitlets Config that nbgrader loads from the repo's nbgrader_config.py."""
    from traitlets.config.loader import PyFileConfigLoader
    return PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()


def submit(root, student, assignment, notebook_files):
    """Place NOTEBOOK_FILES ({name: NotebookNode or Path}) as STUDENT's submission of ASSIGNMENT."""
    dest = root / "submitted" / student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    for name, nb in notebook_files.items():
        if isinstance(nb, Path):
            shutil.copy(nb, dest / name)
        else:
            nbformat.write(nb, dest / name)


def grade_rows(root, url=None):
    """{(student, assignment, notebook, grade_id): (auto, manual, max)} for every grade in ROOT's gradebook (or URL)."""
    from nbgrader.api import Gradebook
    rows = {}
    with Gradebook(url or f"sqlite:///{root / 'gradebook.db'}") as gb:
        for assignment in gb.assignments:
            for sub in gb.assignment_submissions(assignment.name):
                for nb in sub.notebooks:
                    for g in nb.grades:
                        rows[sub.student_id, assignment.name, nb.name, g.name] = (
                            g.auto_score, g.manual_score, g.max_score)
    return rows


def code_scores(root, url=None):
    """{(student, assignment): (autograded score, autograded max)} from ROOT's gradebook (or URL)."""
    from nbgrader.api import Gradebook
    with Gradebook(url or f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {(s.student_id, a.name): (s.code_score, s.max_code_score)
                for a in gb.assignments for s in gb.assignment_submissions(a.name)}


@dataclass
class Course:
    """A temporary course directory after generate -> submit -> autograde -> feedback."""
    root: Path
    batches: dict = field(default_factory=dict)    # name -> (exit status, stdout, stderr) of autograde_all.py
    seconds: dict = field(default_factory=dict)    # (student, assignment) -> autograde wall seconds
    snapshots: dict = field(default_factory=dict)  # name -> grade_rows() at that moment
    extras: dict = field(default_factory=dict)     # what a fixture observed besides (e.g. attack connections)

    def autograded(self, student, assignment):
        """The autograded notebooks (with outputs) of STUDENT for ASSIGNMENT."""
        return sorted((self.root / "autograded" / student / assignment).glob("*.ipynb"))

    def feedback(self, student=None):
        """Feedback HTML files, of one STUDENT or of all."""
        return sorted((self.root / "feedback").glob(f"{student or '*'}/*/*.html"))


def autograde_batch(root, *args):
    """Run scripts/autograde_all.py as the instructor does; return (exit status, stdout, stderr)."""
    proc = run([sys.executable, REPO / "scripts" / "autograde_all.py", "--root", root, *args], cwd=root,
               check=False, timeout=3600)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def probe_course(tmp_path_factory):
    """Probe course: reference students graded, a manual grade given, then everyone regraded with the hostile.

    The hostile batch includes attacks on the grading machine (tests/sandbox_fixtures.py), graded two at a time
    in the sandbox with small limits; a listener on 127.0.0.1 records whether any of them got through."""
    from sandbox_fixtures import Listener, probe_batch_options, require_sandbox, sandbox_probe_submissions
    require_sandbox()
    root = new_probe_course(tmp_path_factory.mktemp("probe_course"))
    release = nbformat.read(root / "course" / PROBE / f"{PROBE}.ipynb", as_version=4)
    course = Course(root)
    cases = probe_submissions(probe_source(), release)
    listener, marker = Listener(), f"grading-orphan-{secrets.token_hex(4)}"
    for student, (nb, _) in {**cases, **sandbox_probe_submissions(probe_source(), root, listener.port,
                                                                   marker)}.items():
        submit(root, student, PROBE, {f"{PROBE}.ipynb": nb})
    options = [f"--Execute.timeout={PROBE_TIMEOUT}", *probe_batch_options()]
    good = [arg for s in cases if s.startswith("good_") for arg in ("--student", s)]
    course.batches["reference"] = autograde_batch(root, *options, *good)
    _give_manual_grade(root, "good_solver", PROBE, "written_a", 1.0)
    course.snapshots["before_hostile"] = grade_rows(root)
    course.batches["hostile"] = autograde_batch(root, *options, "--force")  # everyone, reference ones regraded
    course.snapshots["after_hostile"] = grade_rows(root)
    listener.close()
    course.extras.update(connections=listener.accepted, marker=marker)
    nbgrader(root, "generate_feedback", PROBE, "--force")
    return course


@pytest.fixture(scope="session")
def real_course(tmp_path_factory):
    """Real course: the solutions submitted as student 'solutions', the blank release as 'blank'; autograded once."""
    names = assignment_names(SOLUTIONS)
    root = new_course(tmp_path_factory.mktemp("real_course"), names)
    course = Course(root)
    if not names:
        return course
    nbgrader(root, "generate_assignment", "*", "--force")
    for name in names:
        submit(root, "solutions", name, {p.name: p for p in (root / "solutions" / name).glob("*.ipynb")})
        submit(root, "blank", name, {p.name: p for p in (root / "course" / name).glob("*.ipynb")})
    grader = load_script("autograde_all")
    pairs = grader.submissions(root)
    course.seconds = {pair: sec for pair, (ok, sec) in grader.grade_all(root, pairs).items()}
    AUTOGRADE_SECONDS.update(course.seconds)
    nbgrader(root, "generate_feedback", "*", "--force")
    return course


def mkparent(path):
    """PATH, after creating its parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _give_manual_grade(root, student, assignment, grade_id, score, url=None):
    """Record a manual score, as an instructor does in formgrader (in ROOT's gradebook, or URL)."""
    from nbgrader.api import Gradebook
    with Gradebook(url or f"sqlite:///{root / 'gradebook.db'}") as gb:
        grade = gb.find_grade(grade_id, assignment, assignment, student)
        grade.manual_score = score
        gb.db.commit()


def pytest_terminal_summary(terminalreporter):
    """Print the autograde time of each real notebook submission when the session measured it."""
    if AUTOGRADE_SECONDS:
        terminalreporter.section("autograde wall time per submission")
        for (student, assignment), sec in sorted(AUTOGRADE_SECONDS.items()):
            terminalreporter.write_line(f"{student:12} {assignment:24} {sec:7.1f} s")


# ---------------------------------------------------------------- a Jupyter server for HTTP checks

def free_port():
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterServer:
    """A headless Jupyter server started by CMD; `get`/`post` talk to it with its token."""

    def __init__(self, cmd, cwd, port, token, log_path):
        self.base, self.token = f"http://127.0.0.1:{port}", token
        self.log_path = log_path
        self.proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=tool_env(), stdin=subprocess.DEVNULL,
                                     stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def request(self, path, data=None):
        """(HTTP status, body text) of GET PATH, or POST with form DATA."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body,
                                     headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def wait_ready(self, timeout=120):
        """Wait until /api/status answers; fail with the server log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self.request("/api/status")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"Jupyter did not answer on {self.base}:\n{self.log()[-4000:]}")

    def log(self):
        """The server's output so far."""
        return Path(self.log_path).read_text(errors="replace")

    def stop(self):
        """Stop the server and everything it started (its process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def jupyter_server(tmp_path):
    """Factory: start a Jupyter server (command built from port and token); always stopped after the test."""
    servers = []

    def start(make_cmd, cwd):
        port, token = free_port(), secrets.token_hex(16)
        server = JupyterServer(make_cmd(port, token), cwd, port, token, tmp_path / f"jupyter-{port}.log")
        servers.append(server)
        return server.wait_ready()

    yield start
    for server in servers:
        server.stop()
