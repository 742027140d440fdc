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

.PHONY: setup check lint types test demo lab notebooks clean

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

# The published CPU table (results/fmnist_lt/): 144 runs, about 85 minutes on 2 cores; resumes.
results: $(STAMP)
	$(VPY) -m taetlib results --jobs 2

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Before a commit: each .ipynb and its .py in sync (from the one edited last), outputs stripped.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace --log-level WARN notebooks/*.ipynb

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
