"""nbgrader's exchange as on the course's JupyterHub: release -> fetch -> submit -> collect -> autograde -> feedback.

An instructor and two learners are distinct OS users (throwaway accounts made with useradd and removed after), with
docs/jupyterhub/nbgrader_config.py as their nbgrader configuration. Each step runs in a child forked from this
process that drops to the user's uid and gid before nbgrader starts, so every permission check is the kernel's, on
that user; forked rather than exec'd because this machine's interpreter lives under /root (mode 0700), which the
throwaway users cannot enter. Attacks are real attempts by learner bob on learner alice's work. Needs root: skipped
elsewhere, failed under CI=true.
"""
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from conftest import PROBE, PROBE_TIMEOUT, REPO, autograde_batch, code_scores, new_probe_course, with_cell

HUB_CONFIG = REPO / "docs" / "jupyterhub" / "nbgrader_config.py"
COURSE_ID = "finetune-course"
NBGRADER_DEFAULT_SUBMIT = "--ExchangeFactory.submit=nbgrader.exchange.default.submit.ExchangeSubmit"
ANSWERS = {  # learner -> (square, cube) as typed; alice earns 3 of 3 points, bob 1 (square fails a hidden test)
    "alice": ("def square(x):\n    return x * x", "def cube(x):\n    return x ** 3"),
    "bob": ("def square(x):\n    return abs(x) * x", "def cube(x):\n    return x ** 3"),
}


@dataclass
class Person:
    """An OS user of the classroom and the home folder its nbgrader runs in."""
    name: str
    uid: int
    gid: int
    home: Path


@dataclass
class Classroom:
    """The exchange round trip's folders, people and each step's (exit status, log)."""
    base: Path
    exchange: Path
    course: Path
    people: dict
    steps: dict = field(default_factory=dict)

    @property
    def inbound(self):
        """The exchange folder learners submit into."""
        return self.exchange / COURSE_ID / "inbound"

    def submissions(self, learner):
        """Inbound folders of LEARNER's submissions, oldest first."""
        return sorted(self.inbound.glob(f"{learner}+{PROBE}+*"), key=lambda p: p.name.split("+")[2])


def add_user(name, home):
    """Create OS user NAME (own group, no login shell) with a private home folder HOME; return a Person."""
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    home.mkdir(parents=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)  # what the deployment must ensure: a learner's home (working copies, nbgrader cache) is private
    return Person(name, entry.pw_uid, entry.pw_gid, home)


def as_user(person, cwd, func, *args):
    """Run FUNC(*ARGS) in a forked child as PERSON (uid, gid, HOME) in CWD; return (exit status, its output)."""
    with tempfile.TemporaryFile() as log:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _run_dropped(person, cwd, log.fileno(), func, args)
        _, status = os.waitpid(pid, 0)
        log.seek(0)
        return os.waitstatus_to_exitcode(status), log.read().decode(errors="replace")


def _run_dropped(person, cwd, log_fd, func, args):
    """In the forked child: send output to LOG_FD, become PERSON, run FUNC, exit with its status."""
    code = 1
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
        os.setgroups([])
        os.setgid(person.gid)
        os.setuid(person.uid)
        for key in [k for k in os.environ if k.startswith(("JUPYTER", "NBGRADER"))]:
            del os.environ[key]
        os.environ.update(HOME=str(person.home), USER=person.name, LOGNAME=person.name)
        os.chdir(cwd)
        result = func(*args)
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001  (report anything, in the child's log)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def nbgrader_main(*argv):
    """nbgrader's command line, in this process."""
    from nbgrader.apps import NbGraderApp
    NbGraderApp.launch_instance(argv=list(argv))


def read_file(path):
    """Print the first bytes of PATH (an attempt to read someone else's file)."""
    print(Path(path).read_text()[:200])


def list_folder(path):
    """Print the entries of folder PATH."""
    print(sorted(os.listdir(path)))


def rename(src, dest):
    """Rename SRC to DEST."""
    os.rename(src, dest)


def step(room, key, person, cwd, *argv):
    """Run `nbgrader ARGV` as PERSON in CWD against the classroom's exchange; record and check it."""
    status, log = as_user(person, cwd, nbgrader_main, *argv, f"--Exchange.root={room.exchange}")
    room.steps[key] = status, log
    assert status == 0, f"`nbgrader {' '.join(argv)}` as {person.name} failed ({status}):\n{log[-3000:]}"
    return log


def install_config(person):
    """Give PERSON the hub's nbgrader configuration (on the hub: /etc/jupyter/nbgrader_config.py)."""
    target = person.home / ".jupyter" / "nbgrader_config.py"
    target.parent.mkdir()
    shutil.copy(HUB_CONFIG, target)
    for path in (target.parent, target):
        os.chown(path, person.uid, person.gid)


def answer(room, role):
    """Type the answers of learner ROLE into their fetched copy of the probe (the file stays theirs)."""
    path = room.people[role].home / PROBE / f"{PROBE}.ipynb"
    square, cube = ANSWERS[role]
    nbformat.write(with_cell(with_cell(nbformat.read(path, as_version=4), "square", square), "cube", cube), path)


def run_round_trip(room):
    """Release, fetch, answer, submit (alice once more with nbgrader's own submit), collect, autograde, feedback."""
    teacher, alice, bob = (room.people[n] for n in ("teacher", "alice", "bob"))
    step(room, "release", teacher, room.course, "release_assignment", PROBE)
    for role in ANSWERS:
        learner = room.people[role]
        step(room, f"fetch {role}", learner, learner.home, "fetch_assignment", PROBE)
        answer(room, role)
    step(room, "submit alice nbgrader-default", alice, alice.home, "submit", PROBE, NBGRADER_DEFAULT_SUBMIT)
    step(room, "submit alice", alice, alice.home, "submit", PROBE)
    step(room, "submit bob", bob, bob.home, "submit", PROBE)
    step(room, "collect", teacher, room.course, "collect", PROBE)
    status, table, log = autograde_batch(room.course, f"--Execute.timeout={PROBE_TIMEOUT}")
    room.steps["autograde"] = status, table + log
    step(room, "generate feedback", teacher, room.course, "generate_feedback", PROBE)
    step(room, "release feedback", teacher, room.course, "release_feedback", PROBE)
    step(room, "fetch feedback alice", alice, alice.home, "fetch_feedback", PROBE)


@pytest.fixture(scope="module")
def classroom():
    """The exchange round trip with throwaway users teacher, alice and bob; users and files removed after."""
    if os.geteuid() != 0:
        reason = "needs root to create throwaway OS users (the exchange isolates learners by OS user)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run it")
        pytest.skip(reason)
    # loaded before dropping privileges, where the interpreter's own files may be unreadable: nbgrader and the
    # standard modules it loads late (the gradebook's sqlite3, the us-ascii codec of nbconvert's HTML export)
    import encodings.ascii  # noqa: F401
    import sqlite3  # noqa: F401

    import nbgrader.apps  # noqa: F401
    base = Path(tempfile.mkdtemp(prefix="classroom-", dir="/tmp"))
    base.chmod(0o755)
    tag = f"{os.getpid() % 100000}"
    people = {}
    try:
        for role in ("teacher", "alice", "bob"):
            people[role] = add_user(f"ftx{role}{tag}", base / "home" / role)  # the OS name is the student id
        exchange = base / "exchange"
        exchange.mkdir()
        exchange.chmod(0o1777)  # the deployment's step: root-owned and sticky
        course = new_probe_course(people["teacher"].home / COURSE_ID)
        subprocess.run(["chown", "-R", f"{people['teacher'].uid}:{people['teacher'].gid}", str(course)], check=True)
        for person in people.values():
            install_config(person)
        room = Classroom(base, exchange, course, people)
        run_round_trip(room)
        yield room
    finally:
        for person in people.values():
            subprocess.run(["userdel", person.name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_round_trip_collects_and_autogrades_each_learner(classroom):
    """The instructor collects both learners' latest submissions and the runner grades each on its own answers."""
    alice, bob = classroom.people["alice"].name, classroom.people["bob"].name
    for learner in (alice, bob):
        assert (classroom.course / "submitted" / learner / PROBE / f"{PROBE}.ipynb").is_file(), (
            f"collect did not bring {learner}'s submission:\n{classroom.steps['collect'][1][-2000:]}")
    status, log = classroom.steps["autograde"]
    scores = code_scores(classroom.course)
    assert scores.get((alice, PROBE)) == (3.0, 3.0) and scores.get((bob, PROBE)) == (1.0, 3.0), (
        f"autograded scores {scores}, expected alice 3/3 and bob 1/3 (exit {status}):\n{log[-3000:]}")


def test_learner_fetches_their_own_feedback(classroom):
    """Feedback released through the exchange reaches alice's assignment folder, without the hidden test."""
    pages = list((classroom.people["alice"].home / PROBE / "feedback").glob(f"*/{PROBE}.html"))
    assert len(pages) == 1, f"alice fetched {pages}:\n{classroom.steps['fetch feedback alice'][1][-2000:]}"
    assert "probe-hidden-test-marker" not in pages[0].read_text(), "feedback shows the hidden test"


def test_submission_is_private_to_its_learner_and_the_instructors(classroom):
    """Alice's submitted folders: hers, group = the inbound's (the instructors), closed to everyone else."""
    group = classroom.inbound.stat().st_gid
    latest = classroom.submissions(classroom.people["alice"].name)[-1]
    for path in [latest, *(p for p in latest.rglob("*") if p.is_dir())]:
        info = path.stat()
        assert info.st_uid == classroom.people["alice"].uid and info.st_gid == group, path
        assert stat.S_IMODE(info.st_mode) & 0o007 == 0, f"{path} is open to others: {oct(info.st_mode)}"


def test_learner_cannot_read_another_learners_submission(classroom):
    """Bob, knowing the path of alice's submitted notebook, cannot read it, nor list the inbound folder."""
    bob = classroom.people["bob"]
    notebook = classroom.submissions(classroom.people["alice"].name)[-1] / f"{PROBE}.ipynb"
    status, log = as_user(bob, bob.home, read_file, notebook)
    assert status != 0 and "PermissionError" in log, f"bob read alice's submission:\n{log}"
    status, log = as_user(bob, bob.home, list_folder, classroom.inbound)
    assert status != 0 and "PermissionError" in log, f"bob listed the inbound folder:\n{log}"


def test_nbgrader_default_submission_is_readable_by_another_learner(classroom):
    """Without the defence (nbgrader's own submit), bob reads alice's submitted notebook: the test above can fail."""
    bob = classroom.people["bob"]
    notebook = classroom.submissions(classroom.people["alice"].name)[0] / f"{PROBE}.ipynb"
    status, log = as_user(bob, bob.home, read_file, notebook)
    assert status == 0 and '"cells"' in log, f"bob could not read nbgrader's default submission ({status}):\n{log}"


def test_learner_cannot_take_over_the_course_folder(classroom):
    """In the sticky exchange root, bob cannot rename the instructor's course folder (to plant an inbound he reads)."""
    bob = classroom.people["bob"]
    course = classroom.exchange / COURSE_ID
    status, log = as_user(bob, bob.home, rename, course, classroom.exchange / "hijacked")
    assert status != 0 and "PermissionError" in log and course.is_dir(), f"bob renamed the course folder:\n{log}"


def test_exchange_root_made_by_nbgrader_lets_a_learner_take_over(classroom):
    """An exchange root that nbgrader creates is mode 0777, not sticky: there bob can rename the course folder."""
    teacher, bob = classroom.people["teacher"], classroom.people["bob"]
    parent = classroom.base / "open"
    parent.mkdir()
    os.chown(parent, teacher.uid, teacher.gid)
    exchange = parent / "exchange"
    status, log = as_user(teacher, classroom.course, nbgrader_main, "release_assignment", PROBE,
                          f"--Exchange.root={exchange}")
    assert status == 0, log[-3000:]
    assert stat.S_IMODE(exchange.stat().st_mode) == 0o777, oct(exchange.stat().st_mode)
    status, log = as_user(bob, bob.home, rename, exchange / COURSE_ID, exchange / "hijacked")
    assert status == 0 and (exchange / "hijacked").is_dir(), f"expected the rename to succeed here:\n{log}"


def test_hub_configuration_names_one_course():
    """jupyterhub_config.py, the hub's and the grader's nbgrader configs and the course's load and agree."""
    from traitlets.config.loader import PyFileConfigLoader

    def load(path):
        return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()

    hub, everyone = load(REPO / "docs" / "jupyterhub" / "jupyterhub_config.py"), load(HUB_CONFIG)
    grader = load(REPO / "docs" / "jupyterhub" / "instructor_nbgrader_config.py")
    course = load(REPO / "nbgrader_config.py")
    service = hub.JupyterHub.services[0]
    assert everyone.CourseDirectory.course_id == course.CourseDirectory.course_id == COURSE_ID == service["name"]
    assert grader.CourseDirectory.root == f"{service['cwd']}/{COURSE_ID}"
    assert f"formgrade-{COURSE_ID}" in hub.JupyterHub.load_groups
    assert everyone.ExchangeFactory.submit.__name__ == "PrivateSubmit"
