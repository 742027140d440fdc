# Two commands matter: `make demo` (the main job) and `make test`; `make check` is the quick gate before a commit.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# the suite's tests each run on one thread (tests/conftest.py): one pytest-xdist worker per core
TEST_WORKERS ?= auto
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip's noise about local mirror folders on some machines; real errors still fail the pipe
QUIET   := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup check lint types test demo results lab notebooks clean

setup: $(STAMP)
	@# Chromium for tests/test_lab_browser.py (Playwright launches it by path: it cannot download browsers here)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -q chromium >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } \
	  || echo "note: no chromium, so tests/test_lab_browser.py will be skipped; get it with: sudo apt-get install chromium"

# Re-installs only when the dependency list changes; `make setup` otherwise only looks for Chromium.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip 2>&1 | $(QUIET)
	$(VPY) -m pip install -q -e '.[test]' 2>&1 | $(QUIET)
	$(VPY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Lint, types and the fast tests: a style slip or a broken import fails here in seconds, before the full suite.
check: lint types
	$(VPY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

types: $(STAMP)
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VPY) -m taetlib demo

# The published studies (results/fmnist_lt_study_*/, docs/studies.md): each restores its committed record, then
# tunes, sweeps (both niced; B and C link what they share with A) and republishes. Days of 2 cores; resumes.
STUDIES := fmnist_lt_study_a fmnist_lt_study_b fmnist_lt_study_c
results: $(STAMP)
	@set -e; for s in $(STUDIES); do \
	  reuse=$$([ $$s = $(firstword $(STUDIES)) ] || echo "--reuse-from runs/$(firstword $(STUDIES))"); \
	  echo "== $$s"; \
	  $(VPY) -m taetlib restore --preset $$s; \
	  nice -n 10 $(VPY) -m taetlib tune --preset $$s --jobs 2 $$reuse; \
	  nice -n 10 $(VPY) -m taetlib sweep --preset $$s --jobs 2 $$reuse; \
	  $(VPY) -m taetlib study --preset $$s; \
	done

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Before a commit: each .ipynb and its .py in sync (from the one edited last), outputs stripped.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace --log-level WARN notebooks/*.ipynb

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
