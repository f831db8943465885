# `make train` runs the main job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXECUTE := HEADLESS=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1
# The notebooks' smoke test: one epoch on a few real images, outputs to a scratch folder.
SCRATCH := $(or $(TMPDIR),/tmp)/mnist-notebook-smoke
SMOKE_ENV := EPOCHS=1 TRAIN_SIZE=1024 TEST_SIZE=1000 TRIALS=2 IMAGES_DIR=$(SCRATCH)/images CHECKPOINT=$(SCRATCH)/s5.pt \
            RUNS_DIR=$(SCRATCH)/runs
SUITE := $(SMOKE_ENV) $(BIN)/python -m pytest tests --nbmake S5.ipynb S7.ipynb Sweep.ipynb --nbmake-timeout=900
# Compute as most laptops do, without AVX-512 or native bf16: oneDNN's and ATen's kernels held to AVX2 (read as
# torch loads; MKL's matrix multiplies are not capped by them).
AVX2 := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2

.PHONY: train s7 sweep test test-avx2 test-browser postgres bench bench-avx2 lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# Run S5.ipynb with its default parameters, in place: refreshes its outputs and images/.
train: $(VENV)/.runtime
	$(EXECUTE) S5.ipynb

# Run the S7 progression notebook the same way.
s7: $(VENV)/.runtime
	$(EXECUTE) S7.ipynb

# A small sweep: the default space over the fast recipe, 8 trials on the validation split (main.py sweep --help).
sweep: $(VENV)/.runtime
	$(BIN)/python main.py sweep --trials 8

test: $(VENV)/.dev
	$(SUITE)

# The suite and the notebooks again as an AVX2 laptop computes (the browser and database tests apart: they compare
# no numbers).
test-avx2: $(VENV)/.dev
	$(AVX2) $(SUITE) -m "not browser and not postgres"

# The drawing pad in JupyterLab 4 and Notebook 7, drawn on by headless Chromium (Debian's chromium and
# chromium-driver: `apt-get install chromium chromium-driver`); fails, rather than skips, if they are missing.
test-browser: $(VENV)/.dev
	REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/test_browser.py -q

# A local PostgreSQL for the sweep's database tests (as root, Debian): export the URL it prints, then `make test`.
postgres:
	@echo "export SWEEP_POSTGRES_URL=$$(bash tests/postgres.sh)"

# The benchmark: writes BENCHMARKS.md and bench/results.json (about 20 minutes on 2 CPU cores).
bench: $(VENV)/.runtime
	$(BIN)/python -m bench.run

# The benchmark as an AVX2 laptop computes; its sections are kept beside the uncapped ones (`fast@avx2`).
bench-avx2: $(VENV)/.runtime
	$(AVX2) $(BIN)/python -m bench.run

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
