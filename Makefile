# `make train` runs the main job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXECUTE := HEADLESS=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1
# The notebooks' smoke test: one epoch on a few real images, outputs to a scratch folder.
SCRATCH := $(or $(TMPDIR),/tmp)/mnist-notebook-smoke
SMOKE_ENV := EPOCHS=1 TRAIN_SIZE=1024 TEST_SIZE=1000 IMAGES_DIR=$(SCRATCH)/images CHECKPOINT=$(SCRATCH)/s5.pt \
            RUNS_DIR=$(SCRATCH)/runs

.PHONY: train s7 test test-browser bench lint clean

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

test: $(VENV)/.dev
	$(SMOKE_ENV) $(BIN)/python -m pytest tests --nbmake S5.ipynb S7.ipynb --nbmake-timeout=900

# The drawing pad in JupyterLab 4 and Notebook 7, drawn on by headless Chromium (Debian's chromium and
# chromium-driver: `apt-get install chromium chromium-driver`); fails, rather than skips, if they are missing.
test-browser: $(VENV)/.dev
	REQUIRE_BROWSER=1 $(BIN)/python -m pytest tests/test_browser.py -q

# The benchmark: writes BENCHMARKS.md and bench/results.json (about 20 minutes on 2 CPU cores).
bench: $(VENV)/.runtime
	$(BIN)/python -m bench.run

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
