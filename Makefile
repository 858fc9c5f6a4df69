# The two commands of README.md, each one step on a fresh machine:
#   make cli && .venv/bin/softxent demo
#               create .venv, install softxent with its command line, run the main job
#               (`make demo` does the same)
#   make test   create .venv, install softxent with its test dependencies, lint and
#               format-check (ruff), run the suite
# constraints.txt pins torch to the CPU build so that nothing pulls CUDA packages.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: cli demo test clean

cli: $(VENV)/.installed-cli

demo: cli
	$(BIN)/softxent demo

# The kernels are compiled for the host's instruction set. `make test` runs the
# whole suite on that code, then the kernel and determinism tests again on
# kernels compiled for an AVX2 CPU (Haswell), in their own numba cache. The
# feature list is needed: NUMBA_CPU_NAME alone keeps the host's features
# (AVX-512 code on an AVX-512 host).
AVX2_ENV := NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma NUMBA_CACHE_DIR=.numba-cache-avx2
AVX2_TESTS := tests/test_kernels.py tests/test_kernels_few_classes.py tests/test_kernels_tile_vec.py tests/test_determinism.py \
	tests/test_models_objective.py::test_dense_softmax_kernel_matches_the_blas_path_and_the_definition \
	tests/test_models_objective.py::test_dense_softmax_kernel_on_extreme_inputs
# Modules held to mypy: the loss contract and what feeds the kernels.
TYPED := src/softxent/_contract.py src/softxent/_validation.py src/softxent/_softmax.py \
	src/softxent/_fused.py src/softxent/_losses.py src/softxent/_softmax_paths.py \
	src/softxent/_xent_common.py src/softxent/_xent_options.py src/softxent/_sigmoid_xent.py \
	src/softxent/_rowstats.py src/softxent/_information.py src/softxent/kernels/__init__.py \
	src/softxent/torch/_validation.py src/softxent/torch/_backends.py src/softxent/torch/_reference.py \
	src/softxent/torch/_vocab_rows.py src/softxent/torch/_agreement.py src/softxent/torch/_linear_extras.py \
	src/softxent/torch/_linear_columns.py src/softxent/models/_block_lbfgs.py src/softxent/models/_lbfgsb.py

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy $(TYPED)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	echo "make test: the kernel tests again, compiled for AVX2 (Haswell)"; \
	$(AVX2_ENV) $(BIN)/python -m pytest -q $(AVX2_TESTS)

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
	rm -rf $(VENV) .pytest_cache .hypothesis .numba-cache-avx2 build src/*.egg-info
	# numba's cache notices edits only in the file a kernel is defined in, not in the
	# kernel modules it calls: drop it with the rest.
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete
