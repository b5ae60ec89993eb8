"""Copy the student notebooks from course/ into the learner's workspace/ without ever overwriting a learner's file.

New files (e.g. a notebook that arrived with `git pull`) are added; every file the learner already has is kept
as it is, even when course/ has changed since. Usage: python scripts/sync_workspace.py [COURSE_DIR] [WORKSPACE_DIR]
"""
import filecmp
import shutil
import sys
from pathlib import Path

SKIP = {".ipynb_checkpoints", "__pycache__"}


def course_files(course):
    """Files under COURSE (relative paths), skipping Jupyter checkpoints and caches."""
    return sorted(p.relative_to(course) for p in course.rglob("*")
                  if p.is_file() and not SKIP.intersection(p.relative_to(course).parts))


def copy_new(src, dest):
    """Copy SRC to DEST only if DEST does not exist (atomic check); return True when copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(dest, "xb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
    except FileExistsError:
        return False
    return True


def sync(course, workspace):
    """Mirror COURSE into WORKSPACE, adding missing files only; return (added, kept, updated_upstream) paths."""
    course, workspace = Path(course), Path(workspace)
    if not course.is_dir():
        raise SystemExit(f"{course}/ not found: run this from the repository root (where course/ is).")
    workspace.mkdir(parents=True, exist_ok=True)
    added, kept, updated = [], [], []
    for rel in course_files(course):
        if copy_new(course / rel, workspace / rel):
            added.append(rel)
        else:
            kept.append(rel)
            if not filecmp.cmp(course / rel, workspace / rel, shallow=False):
                updated.append(rel)
    return added, kept, updated


def main(argv=None):
    """Sync and tell the learner what happened."""
    args = sys.argv[1:] if argv is None else argv
    course, workspace = (Path(a) for a in (args + ["course", "workspace"][len(args):])[:2])
    added, kept, updated = sync(course, workspace)
    for rel in added:
        print(f"added   {workspace / rel}")
    for rel in updated:
        print(f"kept    {workspace / rel} (yours; course/ has a different version: {course / rel})")
    print(f"workspace: {len(added)} added, {len(kept)} kept unchanged from your copy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
