# restyle: one command to set up and run, one to set up and test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A local wheel folder (this workplace keeps the CPU build of torch there) is used when present.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
OUT ?= out/demo

.PHONY: setup chromium serve demo test test-slow lint typecheck check clean

$(BIN)/restyle: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FIND_LINKS) -c constraints.txt -e '.[dev]'
	touch $@

setup: $(BIN)/restyle

HOST ?= 127.0.0.1
PORT ?= 8080

## The main job: the HTTP API on http://$(HOST):$(PORT) (docs at /docs). Preview mode on tiny
## models when no real weights are in the local cache.
serve: setup
	$(BIN)/restyle serve --host $(HOST) --port $(PORT)

## Mask + restyle the bundled sample photo from the command line.
demo: setup
	$(BIN)/restyle demo -o $(OUT)

## Debian's Chromium for the studio's browser tests: installed when missing and this is root on Debian;
## otherwise those tests are skipped with the reason.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	  else echo "note: chromium is not installed, so the browser tests will be skipped (apt install chromium)"; fi; }

## The test suite (offline, tiny models, CPU; the studio in headless Chromium).
test: setup chromium
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

## The slow checks (CI runs them too): the README's benchmark commands as written, the original payload
## verbatim through the container entry point, and model.tar.gz run by the real inference toolkit and model
## server in fresh venvs (PyPI installs: a few minutes).
test-slow: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m slow \
	  tests/test_readme.py tests/package/test_container.py tests/package/test_container_check.py

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
