# `make train` runs the main job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The notebook smoke test: one epoch on a few real images, figures to a scratch folder.
NB_SMOKE_ENV := EPOCHS=1 TRAIN_SIZE=1024 TEST_SIZE=1000 IMAGES_DIR=$(or $(TMPDIR),/tmp)/mnist-nb-images

.PHONY: train test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# Execute S5.ipynb in place with its default parameters: refreshes its outputs and images/.
train: $(VENV)/.runtime
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 S5.ipynb

test: $(VENV)/.dev
	$(NB_SMOKE_ENV) $(BIN)/python -m pytest tests --nbmake S5.ipynb --nbmake-timeout=900

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
