# lems-tfx: two commands are the contract (see README.md):
#   make demo   sets up .venv on first use and runs the main job on the embedded default data
#   make test   sets up .venv on first use and runs the test suite
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Find a Python 3.10 (TFX 1.16 supports 3.9-3.10; we pin 3.10): $(PYTHON310) if given, then python3.10 on
# PATH, then pyenv's 3.10.x, then common install prefixes.
PYTHON310 ?= $(shell \
  for c in python3.10 \
           $$(command -v pyenv >/dev/null 2>&1 && ls -d $$(pyenv root)/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V | tail -1) \
           $$(ls -d $$HOME/.pyenv/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V | tail -1) \
           /usr/local/bin/python3.10 /usr/bin/python3.10 /opt/homebrew/bin/python3.10; do \
    if [ -n "$$c" ] && "$$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then echo "$$c"; break; fi; \
  done)

# Creating .venv writes about 3.4 GB (TensorFlow alone is 1.7 GB) plus pip's temporary files.
VENV_FREE_GB ?= 4

.PHONY: demo test venv clean bench help preflight
help:
	@echo "make demo  - set up .venv (first time) and run the pipeline on the embedded default data"
	@echo "make test  - set up .venv (first time) and run the tests"

venv: $(STAMP)

# Checks what creating .venv needs, so that a missing Python or a full disk stops with one clear line
# instead of half-way through pip.
preflight:
	@if [ -z "$(PYTHON310)" ] || ! "$(PYTHON310)" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then \
	  echo "error: no Python 3.10 found$(if $(PYTHON310), ($(PYTHON310) is not a working Python 3.10)). TFX 1.16 needs Python 3.10:" >&2; \
	  echo "       install one (e.g. 'pyenv install 3.10.13') or point to it with 'make PYTHON310=/path/to/python3.10 ...'" >&2; \
	  exit 1; fi
	@free_kb=$$(df -Pk . | awk 'NR == 2 {print $$4}'); need_kb=$$(( $(VENV_FREE_GB) * 1024 * 1024 )); \
	if [ "$$free_kb" -lt "$$need_kb" ]; then \
	  echo "error: only $$(( free_kb / 1024 )) MB free on $$(df -P . | awk 'NR == 2 {print $$6}'); creating $(VENV) needs about $(VENV_FREE_GB) GB." >&2; \
	  echo "       Free some space and run make again ('make clean' removes a half-built $(VENV))." >&2; \
	  exit 1; fi

$(STAMP): setup.py constraints.txt
	@$(MAKE) --no-print-directory preflight
	@echo "Creating $(VENV) with $(PYTHON310) (first run: about 4 minutes, 3.4 GB)"
	@[ -x $(PY) ] || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip<25" setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lems demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	@echo "Run a benchmark as $(PY) -m benchmarks.NAME; benchmarks/RESULTS.md gives each row's command."

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
