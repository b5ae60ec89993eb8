"""Autograde every submission in submitted/, one nbgrader run per student and assignment.

One hostile submission (os._exit, a kernel that cannot be interrupted) makes `nbgrader autograde` fail for that
submission; running each submission on its own keeps the rest of the batch going. Prints a score table from the
gradebook and exits 1 when any submission could not be autograded (the table says which).

Usage: python scripts/autograde_all.py [--root COURSE_DIR] [--force] [extra nbgrader options, e.g. --Execute.timeout=60]
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


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


def autograde_one(root, student, assignment, force, extra):
    """Run nbgrader autograde for one submission; return True when nbgrader reported success."""
    cmd = [sys.executable, "-m", "nbgrader", "autograde", assignment, "--student", student, *extra]
    if force:
        cmd.append("--force")
    return subprocess.run(cmd, cwd=root, env=tool_env()).returncode == 0


def grade_all(root, pairs, force=False, extra=()):
    """Autograde each (student, assignment) pair on its own; return {pair: (succeeded, wall seconds)}."""
    results = {}
    for pair in pairs:
        start = time.perf_counter()
        ok = autograde_one(root, *pair, force, list(extra))
        results[pair] = (ok, time.perf_counter() - start)
    return results


def score_table(root, pairs):
    """Return {(student, assignment): 'autograded a/b, total c/d'} from the gradebook; missing rows are absent."""
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{Path(root, 'gradebook.db').resolve()}") as gb:
        for student, assignment in pairs:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            scores[student, assignment] = "%g/%g auto, %g/%g total" % (
                sub.code_score, sub.max_code_score, sub.score, sub.max_score)
    return scores


def main(argv=None):
    """Autograde all submissions, print the table, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="course directory (holds nbgrader_config.py)")
    parser.add_argument("--force", action="store_true", help="regrade submissions already autograded")
    parser.add_argument("--student", action="append", help="only these students (repeatable)")
    args, extra = parser.parse_known_args(argv)
    pairs = [p for p in submissions(args.root) if not args.student or p[0] in args.student]
    if not pairs:
        print(f"No submissions under {Path(args.root, 'submitted')}/STUDENT/ASSIGNMENT/: nothing to grade.")
        return 0
    results = grade_all(args.root, pairs, args.force, extra)
    scores = score_table(args.root, pairs)
    print(f"\n{'student':24} {'assignment':24} {'score':>24} {'seconds':>8}  status")
    for pair, (ok, seconds) in results.items():
        status = "ok" if ok else "FAILED: not autograded (kernel died?), see the log above"
        print(f"{pair[0]:24} {pair[1]:24} {scores.get(pair, '-'):>24} {seconds:8.1f}  {status}")
    return 0 if all(ok for ok, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
