"""Autograde every submission in submitted/: JOBS sandboxed nbgrader runs at once, then a score table.

Each submission gets its own `nbgrader autograde` process (scripts/grading/worker.py), so one hostile notebook
cannot stop the batch. Its kernel runs inside bubblewrap (scripts/grading/sandbox.py) with limits on wall time,
memory, processes, /tmp and HOME size and output per cell. Workers write the gradebook one at a time (a lock held
except while learners' code runs). A submission counts as done once its worker has recorded it; Ctrl-C kills the
running ones between recordings, and the next run grades what is not done. Exits 1 when a submission could not be
autograded, 2 when no sandbox is available (UNSAFE_NO_SANDBOX=1 grades without one, with a warning).

Usage: python scripts/autograde_all.py [--root DIR] [--force] [--student ID] [--jobs N] [limits…]
                                       [extra nbgrader options, e.g. --Execute.timeout=60]
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
STATE = Path("autograded", ".grading")    # per-submission status and log, below the course root
BACKSTOP_GRACE = 120                       # seconds past the wall limit before the runner kills a worker


def submissions(root):
    """Return sorted (student, assignment) pairs found under ROOT/submitted/."""
    base = Path(root, "submitted")
    if not base.is_dir():
        return []
    return sorted((s.name, a.name) for s in base.iterdir() if s.is_dir() for a in s.iterdir() if a.is_dir())


def tool_env():
    """Environment for nbgrader: this interpreter's bin/ first on PATH (nbgrader runs `alembic`)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.setdefault("FINETUNE_PROFILE", "quick")
    return env


def cores():
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grading():
    """The scripts/grading package (scripts/ is not on sys.path when this file runs as a script)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    import grading.dblock
    import grading.sandbox
    import grading.worker
    return grading


@dataclass
class Options:
    """How to run the batch: parallel jobs, sandbox on/off and the limits of each notebook."""
    jobs: int = field(default_factory=cores)
    sandbox: bool = True
    wall_limit: int = 900          # seconds per notebook, kernel start included
    memory: str = "8G"             # address space per process (torch reserves ~4.6 GB for ~1.4 GB used)
    processes: int = 256           # tasks (processes and threads) of one kernel's uid
    tmp_size: str = "512M"         # the sandbox's /tmp
    home_size: str = "512M"        # the sandbox's HOME, which holds the copy of the assignment folder
    output_limit: int = 1 << 20    # characters of output kept per cell

    def threads(self):
        """Torch/OpenMP threads per kernel, so that jobs × threads ≤ cores."""
        return max(1, cores() // max(1, self.jobs))


class Interrupted(Exception):
    """Ctrl-C during a batch; OUTCOMES holds what was graded and what was stopped."""

    def __init__(self, outcomes):
        super().__init__("interrupted")
        self.outcomes = outcomes


@dataclass
class Outcome:
    """What happened to one submission."""
    ok: bool
    seconds: float
    status: str
    limits: list = field(default_factory=list)


class Paths:
    """Where the runner keeps one submission's status, log and report."""

    def __init__(self, root, student, assignment):
        self.root, self.student, self.assignment = Path(root), student, assignment
        base = self.root / STATE / student
        self.status, self.log, self.report = (base / f"{assignment}{ext}" for ext in (".json", ".log", ".report"))

    def timestamp(self):
        """The submission's timestamp.txt text, or None."""
        path = self.root / "submitted" / self.student / self.assignment / "timestamp.txt"
        return path.read_text().strip() if path.exists() else None

    def recorded(self):
        """The status saved when this submission was last graded successfully, or None."""
        try:
            saved = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None
        graded = (self.root / "autograded" / self.student / self.assignment).is_dir()
        return saved if saved.get("ok") and graded and saved.get("timestamp") == self.timestamp() else None


def limit_flags(opts, report, slot_uid):
    """nbgrader command-line options that pass the limits to SandboxedExecute and SandboxKernelManager."""
    flags = [f"--SandboxedExecute.wall_limit={opts.wall_limit}", f"--SandboxedExecute.output_limit={opts.output_limit}",
             f"--SandboxedExecute.report_path={report}",
             f"--SandboxKernelManager.memory_limit={opts.memory}",
             f"--SandboxKernelManager.process_limit={opts.processes}",
             f"--SandboxKernelManager.tmp_size={opts.tmp_size}", f"--SandboxKernelManager.home_size={opts.home_size}",
             f"--SandboxKernelManager.threads={opts.threads()}"]
    if slot_uid is not None:
        flags.append(f"--SandboxKernelManager.uid={slot_uid}")
    return flags + ([] if opts.sandbox else ["--no-sandbox"])


def worker_env(opts, lock):
    """Environment of one worker: nbgrader's, plus the lock, scripts/ on the path and the thread count."""
    threads = str(opts.threads())
    return {**tool_env(), "GRADING_DB_LOCK": str(lock), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


class Worker:
    """A worker for one submission: a fork of this process (nbgrader already imported) in its own session."""

    def __init__(self, paths, force, extra, opts, slot, lock):
        import multiprocessing
        self.paths, self.slot, self.start = paths, slot, time.monotonic()
        paths.status.parent.mkdir(parents=True, exist_ok=True)
        paths.status.unlink(missing_ok=True)
        paths.report.unlink(missing_ok=True)
        uid = grading().sandbox.sandbox_uid(slot) if opts.sandbox else None
        argv = [paths.assignment, "--student", paths.student, *(["--force"] if force else []),
                *limit_flags(opts, paths.report, uid), *extra]
        sys.stdout.flush()
        sys.stderr.flush()
        self.proc = multiprocessing.get_context("fork").Process(
            target=run_worker, args=(argv, paths.root, paths.log, worker_env(opts, lock)))
        self.proc.start()

    def done(self):
        """True once the worker has exited."""
        return self.proc.exitcode is not None

    def seconds(self):
        """Wall seconds since the worker started."""
        return time.monotonic() - self.start

    def kill(self):
        """SIGKILL the worker, its process group and every process below it (kernels, bwrap)."""
        victims = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.join()
        # nbgrader wrote the sanitized notebook before running it; without it the submission reads as not graded
        shutil.rmtree(self.paths.root / "autograded" / self.paths.student / self.paths.assignment,
                      ignore_errors=True)

    def outcome(self, opts):
        """The Outcome of a finished worker, from its exit status and report; saved when it succeeded."""
        try:
            report = json.loads(self.paths.report.read_text())
        except (OSError, ValueError):
            report = {}
        limits, died = report.get("limits", []), report.get("kernel_died")
        ok = self.proc.exitcode == 0
        if ok:
            status = "ok" + (f"; limits hit: {', '.join(limits)}" if limits else "")
        elif died:
            status = f"FAILED: not autograded, the kernel died ({died[:80]}); log: {self.paths.log}"
        else:
            status = f"FAILED: not autograded (exit status {self.proc.exitcode}); log: {self.paths.log}"
        if not opts.sandbox:
            status = "UNSANDBOXED; " + status
        outcome = Outcome(ok, self.seconds(), status, limits)
        if ok:
            self.paths.status.write_text(json.dumps({**outcome.__dict__, "timestamp": self.paths.timestamp()}))
        return outcome


def run_worker(argv, root, log, env):
    """In a forked child: own session, output to LOG, ENV as the environment, then grading.worker.main(ARGV)."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(root)
    os.environ.clear()
    os.environ.update(env)
    code = 1
    try:
        grading().worker.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def descendants(pid):
    """Pids of all processes below PID (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_batch(root, pairs, force=False, extra=(), opts=None, progress=True):
    """Grade PAIRS (JOBS at a time); return {pair: Outcome}. Ctrl-C stops between recordings: Interrupted."""
    from tqdm import tqdm

    opts, root = opts or Options(), Path(root).resolve()
    outcomes, todo = {}, []
    for pair in pairs:
        saved = None if force else Paths(root, *pair).recorded()
        if saved:
            outcomes[pair] = Outcome(True, saved["seconds"], f"{saved['status']} (graded earlier)", saved["limits"])
        else:
            todo.append(pair)
    import nbgrader.apps.nbgraderapp  # noqa: F401  (imported once here, not in every forked worker: ~5 s CPU)
    grading().worker.pipeline_config(opts.sandbox)  # imports the pipeline's modules too
    tqdm.monitor_interval = 0  # no monitor thread: this process forks its workers
    lock = root / STATE / "gradebook.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    running, free_slots = {}, list(range(opts.jobs))
    bar = tqdm(total=len(todo), desc="autograde", unit="submission", disable=not progress or not todo,
               mininterval=1.0)
    previous = signal.signal(signal.SIGTERM, interrupt)  # `kill` stops the batch as Ctrl-C does
    try:
        while todo or running:
            while todo and free_slots:
                pair = todo.pop(0)
                paths = Paths(root, *pair)
                again = force or (root / "autograded" / pair[0] / pair[1]).exists()
                running[pair] = Worker(paths, again, list(extra), opts, free_slots.pop(0), lock)
            time.sleep(0.1)
            for pair, worker in list(running.items()):
                if not worker.done() and worker.seconds() > opts.wall_limit + BACKSTOP_GRACE:
                    stop([worker], lock)
                    outcomes[pair] = Outcome(False, worker.seconds(), f"FAILED: killed after the {opts.wall_limit} s "
                                             f"wall limit; not recorded; log: {worker.paths.log}")
                elif worker.done():
                    outcomes[pair] = worker.outcome(opts)
                else:
                    continue
                free_slots.append(running.pop(pair).slot)
                bar.set_postfix_str(f"{len(running)} running", refresh=False)
                bar.update()
    except KeyboardInterrupt:
        stop(list(running.values()), lock)
        for pair, worker in running.items():
            outcomes[pair] = Outcome(False, worker.seconds(), "INTERRUPTED: not recorded; rerun to grade it")
        raise Interrupted(outcomes) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    return outcomes


def interrupt(signum, frame):
    """SIGTERM handler: stop the batch as Ctrl-C does."""
    raise KeyboardInterrupt


def stop(workers, lock):
    """Kill WORKERS once none of them is writing the gradebook (the runner holds the lock meanwhile)."""
    dblock = grading().dblock
    dblock.acquire(str(lock))
    try:
        for worker in workers:
            worker.kill()
    finally:
        dblock.release(str(lock))


def grade_all(root, pairs, force=False, extra=(), opts=None):
    """Autograde each (student, assignment) pair; return {pair: (succeeded, wall seconds)}."""
    return {pair: (o.ok, o.seconds) for pair, o in run_batch(root, pairs, force, extra, opts, False).items()}


def gradebook_url(root, extra=()):
    """The gradebook URL nbgrader uses for ROOT: --CourseDirectory.db_url in EXTRA, the config file, or SQLite."""
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config
    from traitlets.config.loader import KVArgParseConfigLoader, PyFileConfigLoader

    cfg = Config()
    if Path(root, "nbgrader_config.py").exists():
        cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config())
    cfg.merge(KVArgParseConfigLoader([a for a in extra if a.startswith("--CourseDirectory.")]).load_config())
    return CourseDirectory(config=cfg, root=str(Path(root).resolve())).db_url


def score_table(root, pairs, extra=()):
    """Return {(student, assignment): 'autograded a/b, total c/d'} from the gradebook; missing rows are absent."""
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(gradebook_url(root, extra)) as gb:
        for student, assignment in pairs:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            scores[student, assignment] = "%g/%g auto, %g/%g total" % (
                sub.code_score, sub.max_code_score, sub.score, sub.max_score)
    return scores


def print_table(root, outcomes, extra, opts):
    """Print the score table (with a warning line when graded without a sandbox)."""
    scores = score_table(root, list(outcomes), extra)
    if not opts.sandbox:
        print("\nWARNING: graded WITHOUT a sandbox (UNSAFE_NO_SANDBOX=1): submissions ran with your rights and "
              "could read or change the gradebook and other submissions.")
    print(f"\n{'student':24} {'assignment':24} {'score':>24} {'seconds':>8}  status")
    for (student, assignment), outcome in outcomes.items():
        print(f"{student:24} {assignment:24} {scores.get((student, assignment), '-'):>24} "
              f"{outcome.seconds:8.1f}  {outcome.status}")


def parse_args(argv):
    """Options of the runner; unknown ones go to nbgrader."""
    d = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="course directory (holds nbgrader_config.py)")
    parser.add_argument("--force", action="store_true", help="regrade submissions already autograded")
    parser.add_argument("--student", action="append", help="only these students (repeatable)")
    parser.add_argument("--jobs", type=int, default=d.jobs, help=f"notebooks graded at once (default: {d.jobs})")
    parser.add_argument("--wall-limit", type=int, default=d.wall_limit, help="seconds per notebook (%(default)s)")
    parser.add_argument("--memory", default=d.memory, help="memory (address space) per kernel (%(default)s)")
    parser.add_argument("--processes", type=int, default=d.processes, help="processes+threads per kernel "
                        "(%(default)s)")
    parser.add_argument("--tmp-size", default=d.tmp_size, help="size of the sandbox's /tmp (%(default)s)")
    parser.add_argument("--home-size", default=d.home_size, help="size of its HOME (%(default)s)")
    parser.add_argument("--output-limit", type=int, default=d.output_limit, help="characters of output kept "
                        "per cell (%(default)s)")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        default=os.environ.get("UNSAFE_NO_SANDBOX", "") not in ("", "0"),
                        help="run kernels WITHOUT a sandbox (also UNSAFE_NO_SANDBOX=1): trusted submissions only")
    args, extra = parser.parse_known_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    opts = Options(jobs=args.jobs, sandbox=not args.unsafe_no_sandbox, wall_limit=args.wall_limit,
                   memory=args.memory, processes=args.processes, tmp_size=args.tmp_size, home_size=args.home_size,
                   output_limit=args.output_limit)
    return args, extra, opts


def main(argv=None):
    """Check the sandbox, autograde all submissions, print the table, return the exit status."""
    args, extra, opts = parse_args(argv)
    if opts.sandbox and (problem := grading().sandbox.check_sandbox()):
        print(f"make autograde: refusing to grade.\n{problem}", file=sys.stderr)
        return 2
    if not opts.sandbox:
        print("WARNING: UNSAFE_NO_SANDBOX is set: learners' code runs with your rights.", file=sys.stderr)
    pairs = [p for p in submissions(args.root) if not args.student or p[0] in args.student]
    if not pairs:
        print(f"No submissions under {Path(args.root, 'submitted')}/STUDENT/ASSIGNMENT/: nothing to grade.")
        return 0
    try:
        outcomes = run_batch(args.root, pairs, args.force, extra, opts)
    except Interrupted as stopped:
        print_table(args.root, stopped.outcomes, extra, opts)
        print("\nInterrupted: submissions marked INTERRUPTED were not recorded; run again to grade them.")
        return 130
    print_table(args.root, outcomes, extra, opts)
    return 0 if all(o.ok for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
