# The two commands of README.md, each one step on a fresh machine:
#   make cli && .venv/bin/softxent demo
#               create .venv, install softxent with its command line, run the main job
#               (`make demo` does the same)
#   make test   create .venv, install softxent with its test dependencies, run the suite
# constraints.txt pins torch to the CPU build so that nothing pulls CUDA packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: cli demo test clean

cli: $(VENV)/.installed-cli

demo: cli
	$(BIN)/softxent demo

test: $(VENV)/.installed-dev
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure" >&2; exit 1; fi; \
	exit $$rc

$(VENV)/.installed-base: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --editable .
	touch $@

$(VENV)/.installed-cli: $(VENV)/.installed-base
	$(PIP) --editable ".[cli,data]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-base
	$(PIP) --editable ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
