# Both targets set themselves up on a fresh machine: a virtualenv, then torch (CPU build, explicitly
# pinned here so nothing pulls a multi-GB CUDA wheel), then the project with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[export,runtime,dev,plots]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	$(BIN)/python -m rating_edge.demo

clean:
	rm -rf $(VENV) demo_out .demo_cache
