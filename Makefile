# Two commands matter: `make demo` (the main job) and `make test`.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip's noise about local mirror folders on some machines; real errors still fail the pipe
QUIET   := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup test demo lab notebooks clean

setup: $(STAMP)

# Re-installs only when the dependency list changes; `make setup` is otherwise a no-op.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip 2>&1 | $(QUIET)
	$(VPY) -m pip install -q -e '.[test]' 2>&1 | $(QUIET)
	$(VPY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VPY) -m taetlib demo

# The published CPU table (results/fmnist_lt/): 144 runs, about 70 minutes on 2 cores; resumes.
results: $(STAMP)
	$(VPY) -m taetlib results --jobs 2

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Before a commit: each .ipynb and its .py in sync (from the one edited last), outputs stripped.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace --log-level WARN notebooks/*.ipynb

clean:
	rm -rf runs .pytest_cache
