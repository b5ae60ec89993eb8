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
