"""nbgrader configuration for the fine-tuning course (instructor side; see README, "Instructor cycle")."""
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, GetGrades, NbGraderPreprocessor

c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

# Layout: nbgrader sources in solutions/, generated student notebooks in course/ (committed).
c.CourseDirectory.course_id = "finetune-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "course"
# The gradebook is nbgrader's default, sqlite at <course root>/gradebook.db: git-ignored (it stores the hidden tests).

# Seconds one cell may run while autograding before it is interrupted and recorded as CellTimeoutError.
# Generous for the quick profile on 2 CPU cores; an infinite loop costs the instructor this long per submission.
c.Execute.timeout = 300
# `make autograde` (scripts/autograde_all.py) runs each kernel in a bubblewrap sandbox and adds per-notebook limits
# (wall time, memory, processes, /tmp and HOME size, output per cell; defaults: `scripts/autograde_all.py --help`),
# swaps Execute for grading.execute.SandboxedExecute and scrubs hidden-test lines from outputs (scripts/grading/).
# Plain `nbgrader autograde` runs none of that: grade learners' work only through `make autograde`.

# LMS collection (`make collect`, scripts/collect.py runs nbgrader zip_collect): this pattern is matched (re.match)
# against the path of each file extracted from the LMS download; `student_id` names the learner's folder in
# submitted/, `file_id` the notebook (the LMS's extension and a "-1" re-upload suffix are dropped). For another LMS,
# pick it below or write a pattern with those two groups (start it with `.*/`: it sees the whole path).
LMS_FILE_NAMES = {
    # Canvas "Download Submissions": LOGIN_[late_]USERID_FILEID_NAME, e.g. smithjane_12345_678901_01_freezing.ipynb;
    # USERID (Canvas's user ID, the "ID" column of its gradebook export) becomes the student id.
    "canvas": r".*/(?P<login>[^/_]+)_(?i:late_)?(?P<student_id>\d+)_(?P<lms_file>\d+)_(?P<file_id>[^/]+?)(?:-\d+)?"
              r"\.[^./]+$",
    # Moodle "Download all submissions": FULL NAME_PARTICIPANT_assignsubmission_file_NAME, as one file or as a folder
    # holding NAME ("Download submissions in folders"); PARTICIPANT (its grading worksheet's "Participant N") is the id.
    "moodle": r".*/(?P<full_name>[^/]+)_(?P<student_id>\d+)_assignsubmission_file_[/_]?(?P<file_id>[^/]+?)"
              r"\.[^./]+$",
}
c.FileNameCollectorPlugin.named_regexp = LMS_FILE_NAMES["canvas"]
c.ZipCollectApp.strict = True  # a notebook whose name is not one of the assignment's is skipped (collect.py lists it)

# Deterministic course/: drop per-cell execution timestamps copied from executed sources.
c.ClearOutput.remove_metadata_fields = {"collapsed", "scrolled", "execution", "ExecuteTime"}


class ClearRuntimeMetadata(NbGraderPreprocessor):
    """Drop notebook metadata that depends on the machine that last ran the source (Python version)."""

    def preprocess(self, nb, resources):
        """Keep only the language name in language_info so course/ is byte-identical on every machine."""
        info = nb.metadata.get("language_info")
        if info is not None:
            nb.metadata["language_info"] = {"name": info.get("name", "python")}
        return nb, resources


class HideTestTracebacks(NbGraderPreprocessor):
    """In feedback, show only 'ErrorName: message' for autograder test cells: tracebacks quote hidden tests."""

    def preprocess_cell(self, cell, resources, index):
        """Replace the traceback of each error output in a locked grade cell by its last line."""
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


c.GenerateAssignment.preprocessors = [*GenerateAssignment.class_traits()["preprocessors"].default(),
                                      ClearRuntimeMetadata]

# Feedback returned to learners: nbgrader 0.9 puts hidden tests and mark schemes back into autograded notebooks
# and its feedback shows them; strip both, and the test tracebacks that quote hidden lines.
c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, ClearMarkScheme, HideTestTracebacks,
                                    CSSHTMLHeaderPreprocessor]
