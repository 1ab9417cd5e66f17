# make demo: install, then run the main job on the embedded sample.
# make test: install, then lint (ruff) and test (pytest).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format sample-data clean

$(STAMP): pyproject.toml tools/setup-venv.sh
	VENV=$(VENV) tools/setup-venv.sh
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jmlgeo info sample_data/scene.tif --boxes sample_data/boxes.gpkg

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sample-data: $(STAMP)
	$(BIN)/python sample_data/make_sample_data.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
