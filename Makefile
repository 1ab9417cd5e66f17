# make demo: install, then run the main job on the embedded sample.
# make test: install, then lint (ruff) and test (pytest).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format sample-data clean

$(STAMP): pyproject.toml tools/setup-venv.sh
	VENV=$(VENV) tools/setup-venv.sh
	touch $(STAMP)

# Train from the sample's boxes (fast preset), predict the scene, score it against the true masks.
# Finished stages are reused when `make demo` runs again; `rm -rf demo/` starts over.
demo: $(STAMP)
	$(BIN)/jmlgeo train sample_data/scene.tif --boxes sample_data/boxes.gpkg --out demo/run
	$(BIN)/jmlgeo predict demo/run/model.safetensors sample_data/scene.tif --out demo/prediction --polygons
	$(BIN)/jmlgeo evaluate demo/prediction/scene.classes.tif --truth sample_data/truth.gpkg --out demo/report.json

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
