"""Write the student edition: the repository an instructor publishes to a class, without any answer.

It holds the generated student notebooks (course/), the finetune_helpers package, the pinned environment files,
the never-overwrite workspace copy behind `make lab`, and a learner README, Makefile and small test suite (from
docs/student_edition/). What is copied is an allow-list: solutions/, hidden tests, the quiz key, rubrics, model
answers, nbgrader_config.py, gradebooks and the instructor tests never go in, and a new file in this repository
stays out until it is named here. Usage: python scripts/student_edition.py DEST [--git]
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "docs/student_edition"
# (path in this repository, path in the edition)
COPIED = (
    ("course", "course"),
    ("finetune_helpers", "finetune_helpers"),
    ("pyproject.toml", "pyproject.toml"),
    ("environment.yml", "environment.yml"),
    ("scripts/sync_workspace.py", "scripts/sync_workspace.py"),
    (f"{TEMPLATE}/README.md", "README.md"),
    (f"{TEMPLATE}/Makefile", "Makefile"),
    (f"{TEMPLATE}/gitignore", ".gitignore"),
    (f"{TEMPLATE}/test_course.py", "tests/test_course.py"),
    # package unit tests that need no solutions: freezing (01's ideas), the profile switch, the device helpers
    ("tests/helpers_fixtures.py", "tests/helpers_fixtures.py"),
    ("tests/test_freezing.py", "tests/test_freezing.py"),
    ("tests/test_profiles.py", "tests/test_profiles.py"),
    ("tests/test_device.py", "tests/test_device.py"),
)
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")


def check_destination(dest):
    """Refuse a DEST inside this repository or one that already holds files."""
    dest = dest.resolve()
    if dest == REPO or REPO in dest.parents:
        raise SystemExit(f"DEST {dest} is inside this repository: choose a folder outside it, e.g. ../finetune-student")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SystemExit(f"DEST {dest} already exists and is not an empty folder: remove it or choose another")
    return dest


def write_edition(dest):
    """Copy the allow-listed files into DEST; return DEST's files (relative paths)."""
    dest = check_destination(Path(dest))
    for source, target in COPIED:
        src, out = REPO / source, dest / target
        if not src.exists():
            raise SystemExit(f"{source} is missing from {REPO}: the student edition needs it")
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, ignore=SKIPPED)
        else:
            shutil.copy2(src, out)
    return sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())


def git_init(dest):
    """Make DEST a git repository with every file staged, ready for the instructor's first commit."""
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "add", "-A"], check=True)


def main(argv=None):
    """Write the edition, optionally git-init it, and say what to do next."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="new folder for the learner repository (outside this one)")
    parser.add_argument("--git", action="store_true", help="git init DEST and stage every file")
    args = parser.parse_args(argv)
    files = write_edition(args.dest)
    if args.git:
        git_init(args.dest)
    print(f"Student edition: {len(files)} files in {args.dest.resolve()}")
    print("Next: commit it and publish it to the class (e.g. as a GitHub Classroom template repository);"
          " learners run `make lab`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
