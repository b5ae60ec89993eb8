# Course commands. Learners: `make lab`. Everyone: `make test`. Instructors: see README, "Instructor cycle".
SHELL := /bin/bash
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell command -v python3.11 || command -v python3)
endif
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-pyproject
# nbgrader runs `alembic` and Jupyter finds its kernels through PATH: the venv's bin/ comes first.
export PATH := $(BIN):$(PATH)
export FINETUNE_PROFILE ?= quick
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
PORT ?= 8888
WORKSPACE ?= workspace
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: env system-packages lab test course collect autograde formgrader feedback grades student-edition

env: $(STAMP)  ## create .venv (Python 3.11) and install the course package; re-installs when pyproject.toml changes

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "Python 3.11 is required (found $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e .
	touch $@

system-packages:  ## install the Debian packages the tests need (bubblewrap, chromium, postgresql-15; uses sudo unless root)
	bash scripts/install_system_packages.sh

lab: env  ## copy new student notebooks into workspace/ (never overwriting yours) and open JupyterLab there
	$(BIN)/python scripts/sync_workspace.py course $(WORKSPACE)
	$(BIN)/jupyter lab --ServerApp.root_dir=$(WORKSPACE) --ip=127.0.0.1 --port=$(PORT) $(ALLOW_ROOT) $(LAB_ARGS)

test: env  ## run the whole test suite (what CI runs); pass options with PYTEST_ARGS='-m "not slow"'
	$(BIN)/python -m pytest $(PYTEST_ARGS)

course: env  ## regenerate the student notebooks in course/ from solutions/ (and register them in gradebook.db)
	$(BIN)/nbgrader generate_assignment "*" --force

gradebook.db:  ## the gradebook (git-ignored): generating the assignments registers them
	$(MAKE) course

collect: env  ## LMS download -> submitted/: make collect ZIP=downloads.zip ASSIGNMENT=01_freezing (FORCE=1 replaces)
	@test -n "$(ZIP)" -a -n "$(ASSIGNMENT)" || { echo "usage: make collect ZIP=file.zip ASSIGNMENT=NN_topic"; exit 2; }
	$(BIN)/python scripts/collect.py $(ZIP) --assignment $(ASSIGNMENT) $(if $(FORCE),--force)

# Sandboxed autograding (README, "Instructor cycle"): JOBS notebooks at once (default: all cores); limits per
# notebook, empty = the defaults of scripts/autograde_all.py --help; UNSAFE_NO_SANDBOX=1 grades without bubblewrap.
AUTOGRADE_LIMITS = $(if $(JOBS),--jobs $(JOBS)) $(if $(WALL_LIMIT),--wall-limit $(WALL_LIMIT)) \
  $(if $(MEMORY_LIMIT),--memory $(MEMORY_LIMIT)) $(if $(PROC_LIMIT),--processes $(PROC_LIMIT)) \
  $(if $(TMP_LIMIT),--tmp-size $(TMP_LIMIT)) $(if $(HOME_LIMIT),--home-size $(HOME_LIMIT)) \
  $(if $(OUTPUT_LIMIT),--output-limit $(OUTPUT_LIMIT)) $(if $(filter-out 0,$(UNSAFE_NO_SANDBOX)),--unsafe-no-sandbox)

autograde: env gradebook.db  ## autograde submitted/STUDENT/ASSIGNMENT/ in a sandbox, JOBS=N at once (FORCE=1 regrades; STUDENT=id)
	$(BIN)/python scripts/autograde_all.py $(if $(FORCE),--force) $(if $(STUDENT),--student $(STUDENT)) $(AUTOGRADE_LIMITS)

formgrader: env  ## serve formgrader (manual grading) on 127.0.0.1; open the printed URL with /formgrader
	@echo "Open http://127.0.0.1:$(PORT)/formgrader in its own browser tab (token: see the URL printed below)."
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) $(ALLOW_ROOT)

feedback: env  ## write feedback/STUDENT/ASSIGNMENT/*.html for every autograded assignment
	$(BIN)/nbgrader generate_feedback "*" --force

grades: env  ## write grades/ASSIGNMENT.csv and grades/total.csv (student_id, score, max_score) for the LMS
	$(BIN)/python scripts/grades.py

student-edition:  ## write the learner repository to DEST=path (no solutions, hidden tests, quiz key or rubrics)
	@test -n "$(DEST)" || { echo "usage: make student-edition DEST=path/outside/this/repository"; exit 2; }
	$(PYTHON) scripts/student_edition.py $(DEST) --git
