"""JupyterHub settings for the course (a snippet to merge into /etc/jupyterhub/jupyterhub_config.py).

One course, graded from a shared grader account that runs as a JupyterHub service (nbgrader's "one class, multiple
graders" set-up). Every learner and instructor is a distinct OS user, spawned by the default LocalProcessSpawner:
the exchange keeps learners apart through file permissions, which separate OS users only (not containers that all
run as one uid such as jovyan). See README, "JupyterHub classroom".
"""
c = get_config()  # noqa: F821  (injected by traitlets when JupyterHub loads this file)

COURSE_ID = "finetune-course"             # = CourseDirectory.course_id in docs/jupyterhub/nbgrader_config.py
GRADER = f"grader-{COURSE_ID}"            # the OS account that owns the course folder and releases/collects
INSTRUCTORS = ["instructor1"]             # hub users allowed into the grader account's formgrader
LEARNERS = ["alice", "bob"]               # e.g. read from the class list

c.Authenticator.allowed_users = set(INSTRUCTORS + LEARNERS)
c.Spawner.default_url = "/lab"

# Graders reach the shared server; nbgrader's course list finds the course through the services API.
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE_ID}": {"users": INSTRUCTORS},
    f"nbgrader-{COURSE_ID}": {"users": LEARNERS},
}
c.JupyterHub.load_roles = [
    {"name": f"formgrade-{COURSE_ID}", "groups": [f"formgrade-{COURSE_ID}"],
     "scopes": [f"access:services!service={COURSE_ID}", "list:services", f"read:services!service={COURSE_ID}"]},
    {"name": f"nbgrader-{COURSE_ID}", "groups": [f"nbgrader-{COURSE_ID}"],
     "scopes": ["list:services", f"read:services!service={COURSE_ID}"]},
    {"name": "server", "scopes": ["inherit"]},  # the course-list extension calls the hub API with the user's rights
]

# The shared grader server: Lab with formgrader, running as the grader account in its home (the course folder is
# set in that account's ~/.jupyter/nbgrader_config.py: docs/jupyterhub/instructor_nbgrader_config.py).
c.JupyterHub.services = [
    {
        "name": COURSE_ID,
        "url": "http://127.0.0.1:9999",
        "command": ["jupyterhub-singleuser"],
        "user": GRADER,
        "cwd": f"/home/{GRADER}",
        "environment": {"JUPYTERHUB_DEFAULT_URL": "/lab"},
    },
]
