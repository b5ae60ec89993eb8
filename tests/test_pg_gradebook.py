"""The gradebook on a real PostgreSQL server: nbgrader's CLI on it, and two grading machines writing it at once.

The server is Debian's PostgreSQL 15, started by the test in a temporary directory (initdb + pg_ctl), listening on
127.0.0.1 on a free port. Postgres refuses to run as root, so as root it runs as the user `nobody`.
"""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from conftest import (PROBE, PROBE_TIMEOUT, REPO, _give_manual_grade, code_scores, free_port, grade_rows, mkparent,
                      nbgrader, new_course, probe_source, probe_submissions, run, submit, tool_env)
from sandbox_fixtures import require_sandbox

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_USER, DB_NAME = "grader", "finetune"


def require_postgres():
    """Skip (fail with CI=true) when the PostgreSQL server binaries are missing."""
    missing = [tool for tool in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / tool).is_file()]
    if missing:
        reason = (f"PostgreSQL server binaries {missing} not found in {PG_BIN}: install Debian's postgresql-15 "
                  f"(`make system-packages`) or set PG_BIN")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory, run as an unprivileged user when we are root."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="pg-gradebook-"))  # not under pytest's 0700 root-only tmp dirs
        self.port = free_port()
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.data, self.log = self.dir / "data", self.dir / "server.log"

    def _pg(self, tool, *args):
        """Run a PostgreSQL program as the server's user; raise with its output on failure."""
        cmd = [str(PG_BIN / tool), *map(str, args)]
        if self.user:
            cmd = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{log[-3000:]}")
        return proc

    def start(self):
        """initdb (trust auth, local only), start the server, create the course database; return self."""
        self._pg("initdb", "-D", self.data, "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                   f"-c fsync=off")
        self._pg("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start")
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
        return self

    @property
    def url(self):
        """The SQLAlchemy URL nbgrader takes as --CourseDirectory.db_url."""
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"

    def stop(self):
        """Stop the server at once and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL server with an empty course database; stopped after this module's tests."""
    require_postgres()
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_course(postgres, tmp_path_factory):
    """A course directory holding the probe, generated into course/ and registered in the PostgreSQL gradebook."""
    root = new_course(tmp_path_factory.mktemp("pg_course"))
    nbformat.write(probe_source(), mkparent(root / "solutions" / PROBE / f"{PROBE}.ipynb"))
    nbgrader(root, "generate_assignment", PROBE, "--force", f"--CourseDirectory.db_url={postgres.url}")
    return root


def test_nbgrader_cli_uses_the_postgres_gradebook(postgres, pg_course):
    """`nbgrader generate_assignment` and `nbgrader db student add/list` read and write the PostgreSQL gradebook."""
    root = pg_course
    nbgrader(root, "db", "student", "add", "cli_student", "--first-name=Ada", "--last-name=Lovelace",
             f"--CourseDirectory.db_url={postgres.url}")
    listing = nbgrader(root, "db", "student", "list", f"--CourseDirectory.db_url={postgres.url}").stdout
    assert "cli_student (Lovelace, Ada)" in listing, f"student not listed from PostgreSQL:\n{listing}"
    from nbgrader.api import Gradebook
    with Gradebook(postgres.url, "finetune-course") as gb:
        assert PROBE in [a.name for a in gb.assignments], "generate_assignment did not register the probe in PG"
        assert gb.find_student("cli_student").last_name == "Lovelace"
    assert not (root / "gradebook.db").exists(), "a SQLite gradebook.db was written although db_url points to PG"


SHARDS = {  # student -> (submission key of probe_submissions, grading machine); expected scores: probe_submissions
    "a_solver": ("good_solver", "a"), "a_partial": ("good_partial", "a"),
    "b_blank": ("good_blank", "b"), "b_import": ("hostile_import_error", "b"),
}


def runner(root, url, students):
    """The command line of scripts/autograde_all.py grading STUDENTS of course ROOT into the gradebook at URL."""
    return [sys.executable, REPO / "scripts" / "autograde_all.py", "--root", root, "--jobs", "1",
            *[arg for student in students for arg in ("--student", student)],
            f"--CourseDirectory.db_url={url}", f"--Execute.timeout={PROBE_TIMEOUT}"]


def run_at_once(commands, logs):
    """Start COMMANDS ({name: (argv, cwd)}) together; return {name: (exit status, start, end, output)}."""
    procs = {}
    for name, (cmd, cwd) in commands.items():
        log = open(logs / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=tool_env(), stdout=log,
                                        stderr=subprocess.STDOUT), time.monotonic(), log)
    results = {}
    while len(results) < len(procs):
        for name, (proc, start, log) in procs.items():
            if name not in results and proc.poll() is not None:
                log.close()
                results[name] = (proc.returncode, start, time.monotonic(), Path(log.name).read_text())
        time.sleep(0.1)
    return results


@pytest.mark.slow
def test_two_grading_machines_share_one_postgres_gradebook(postgres, pg_course, tmp_path):
    """Two runners on two copies of the course (two machines), each grading its shard of learners at the same time
    into one PostgreSQL gradebook: every score recorded, an earlier manual grade untouched, no SQLite file."""
    require_sandbox()
    url = postgres.url
    release = nbformat.read(pg_course / "course" / PROBE / f"{PROBE}.ipynb", as_version=4)
    cases = probe_submissions(probe_source(), release)
    from nbgrader.api import Gradebook
    with Gradebook(url, "finetune-course") as gb:  # the class list, as `nbgrader db student import` would load it
        for student in ["m_solver", *SHARDS]:
            gb.add_student(student)
    # a learner graded earlier, whose written answer the instructor has marked by hand
    submit(pg_course, "m_solver", PROBE, {f"{PROBE}.ipynb": cases["good_solver"][0]})
    run(runner(pg_course, url, ["m_solver"]), cwd=pg_course)
    _give_manual_grade(pg_course, "m_solver", PROBE, "written_a", 1.0, url=url)
    before = grade_rows(pg_course, url)

    machines = {}
    for machine in ("a", "b"):  # each machine: its own checkout with the collected submissions, one shared database
        root = shutil.copytree(pg_course, tmp_path / f"machine_{machine}", ignore=shutil.ignore_patterns("autograded"))
        for student, (case, _) in SHARDS.items():
            submit(root, student, PROBE, {f"{PROBE}.ipynb": cases[case][0]})
        shard = [student for student, (_, m) in SHARDS.items() if m == machine]
        machines[machine] = (runner(root, url, shard), root)
    runs = run_at_once(machines, tmp_path)

    for machine, (status, _, _, out) in runs.items():
        assert status == 0, f"the runner of machine {machine} failed ({status}):\n{out[-3000:]}"
        for student, (case, machine_of) in SHARDS.items():
            row = f"{student} {PROBE} {cases[case][1]:g}/3 auto"  # its table reads the scores back from PostgreSQL
            assert machine_of != machine or any(" ".join(line.split()).startswith(row) for line in out.splitlines()), (
                f"the table of machine {machine} lacks {row!r}:\n{out[-3000:]}")
    (_, start_a, end_a, _), (_, start_b, end_b, _) = runs["a"], runs["b"]
    overlap = min(end_a, end_b) - max(start_a, start_b)
    assert overlap > 0.5 * min(end_a - start_a, end_b - start_b), (
        f"the two runners barely overlapped ({overlap:.1f} s of {end_a - start_a:.1f} s and {end_b - start_b:.1f} s):"
        f" the test did not exercise concurrent writers")
    scores = code_scores(pg_course, url)
    expected = {(s, PROBE): (float(cases[case][1]), 3.0) for s, (case, _) in SHARDS.items()}
    expected["m_solver", PROBE] = (3.0, 3.0)
    assert scores == expected, f"scores in PostgreSQL {scores}, expected {expected}"
    after = grade_rows(pg_course, url)
    kept = {k: v for k, v in after.items() if k[0] == "m_solver"}
    assert kept == before, f"the earlier learner's grades changed: before {before}, after {kept}"
    assert after["m_solver", PROBE, PROBE, "written_a"][1] == 1.0, "the manual grade was lost"
    for root in [pg_course, *(root for _, root in machines.values())]:
        assert not (root / "gradebook.db").exists(), f"{root} got a SQLite gradebook.db: db_url was not used"
    exported = run([sys.executable, REPO / "scripts" / "grades.py", "--root", pg_course,
                    f"--CourseDirectory.db_url={url}"], cwd=pg_course)
    rows = (pg_course / "grades" / f"{PROBE}.csv").read_text().splitlines()
    assert {"m_solver,4,5", "a_solver,3,5", "b_blank,0,5"} <= set(rows), (exported.stdout, rows)
