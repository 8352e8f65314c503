# The two commands a new user runs (see README.md):
#   make demo   - install into .venv and run the whole pipeline on the embedded demo (CPU)
#   make test   - install into .venv and run the test suite under TensorFlow and JAX
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: install demo test test-tf test-jax lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[tensorflow,jax,workflow,test,lint]'
	# compile TOMTOM's numba kernels into numba's cache now (~1 min once), not in the first motifs job
	$(BIN)/python -c 'from bpflow.interpret.motifs import warm_tomtom_cache; warm_tomtom_cache()'
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --report results/report.html
	@echo "report: results/report.html (open it in a browser)"

test: install
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest -q tests
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m backend tests

# ruff (format check and lint) on the Python code, snakefmt on the workflow, snakemake --lint
lint: install
	$(BIN)/ruff format --check bpflow tests benchmarks
	$(BIN)/ruff check bpflow tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

# rewrite the code in the formatters' style
format: install
	$(BIN)/ruff format bpflow tests benchmarks
	$(BIN)/ruff check --fix bpflow tests benchmarks
	$(BIN)/snakefmt Snakefile workflow

clean:
	rm -rf results .snakemake
