# Every target sets itself up on a fresh machine: a virtualenv, then torch (CPU build, explicitly
# pinned here so nothing pulls a multi-GB CUDA wheel), then the project with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-fast demo docs setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[export,runtime,openvino,explain,archive,triton,plots,dev,docs]'
	touch $(STAMP)

# Both cores: test modules are spread over two workers (a module stays on one, so its fixtures are built once).
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

# The quick loop while editing: everything but the tests marked slow (training, end-to-end runs) and the
# ones that start servers.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile -m "not slow and not triton" tests

demo: $(STAMP)
	$(BIN)/python -m rating_edge.demo

# The documentation site (mkdocs.yml) into site/; --strict turns every warning (a broken link) into a failure.
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_out .demo_cache site
