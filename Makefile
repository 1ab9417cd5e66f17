# make demo: install, then run the main job on the embedded sample.
# make test: install, then lint (ruff) and test (pytest), then the QGIS plugin's tests in QGIS.
# make qgis-plugin: build dist/jmlgeo_qgis.zip (QGIS > Plugins > Install from ZIP).
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format sample-data clean qgis-plugin test-qgis

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
	@$(MAKE) --no-print-directory test-qgis

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

sample-data: $(STAMP)
	$(BIN)/python sample_data/make_sample_data.py

clean:
	rm -rf $(VENV) $(QGIS_VENV) .pytest_cache .ruff_cache build *.egg-info

# The QGIS plugin (qgis_plugin/): a zip for "Install from ZIP", and its tests in real QGIS.
# test-qgis runs qgis_plugin/tests headless with Debian's QGIS (apt-get install qgis python3-qgis)
# from .venv-qgis: a venv over /usr/bin/python3 with its system site-packages (QGIS's Python
# bindings) plus pytest and pytest-qgis. Without QGIS it prints why and skips. The screenshot test
# (Xvfb) saves dist/qgis-screenshot.png (or $JMLGEO_SCREENSHOT): CI keeps it as an artifact.
QGIS_PYTHON := /usr/bin/python3
QGIS_VENV := .venv-qgis
QGIS_STAMP := $(QGIS_VENV)/.installed

qgis-plugin:
	python3 qgis_plugin/build_zip.py dist/jmlgeo_qgis.zip

test-qgis:
	@if ! $(QGIS_PYTHON) -c 'import qgis.core' >/dev/null 2>&1; then \
	  echo "SKIPPED the QGIS plugin tests: QGIS is not installed ($(QGIS_PYTHON) cannot import"; \
	  echo "qgis.core); apt-get install qgis python3-qgis python3-venv, then make test-qgis"; \
	else \
	  $(MAKE) --no-print-directory $(STAMP) $(QGIS_STAMP) && \
	  JMLGEO_SCREENSHOT=$${JMLGEO_SCREENSHOT:-$(CURDIR)/dist/qgis-screenshot.png} \
	  QT_QPA_PLATFORM=offscreen $(QGIS_VENV)/bin/pytest qgis_plugin/tests; \
	fi

$(QGIS_STAMP):
	$(QGIS_PYTHON) -m venv --system-site-packages $(QGIS_VENV) || { rm -rf $(QGIS_VENV); \
	  echo "error: cannot make $(QGIS_VENV); apt-get install python3-venv" >&2; exit 1; }
	$(QGIS_VENV)/bin/python -m pip install --quiet "pytest>=8" "pytest-qgis>=5,<6"
	touch $@
