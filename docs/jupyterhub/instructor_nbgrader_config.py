"""The grader account's nbgrader settings: install as /home/grader-finetune-course/.jupyter/nbgrader_config.py.

The course folder is a clone of the full course repository (solutions/, course/, nbgrader_config.py): formgrader
and the nbgrader commands of the grader account work there. `nbgrader release_assignment` publishes its course/
notebooks, the same files as the student edition's course/.
"""
c = get_config()  # noqa: F821  (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.root = "/home/grader-finetune-course/finetune-course"
