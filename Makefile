# kubeserve developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := onnx,storage,package,tensorflow,torchserve,test,lint,bench
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export ORT_DISABLE_TELEMETRY := 1

.PHONY: setup test unit lint demo images e2e crd bench clean docs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	$(BIN)/python scripts/install-helm.py
	rm -f $(VENV)/.installed-* && touch $@

lint: setup
	$(BIN)/ruff check operator tests bench scripts
	$(BIN)/ruff format --check operator tests bench scripts
	$(BIN)/mypy

# Everything but the kind e2e suite: unit, integration (kmock), runtimes, chart, images.
test: setup lint
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest tests/unit tests/integration

demo: setup
	$(BIN)/python scripts/demo.py

images:
	bash images/build.sh

e2e: setup
	$(BIN)/python -m pytest -m e2e tests/e2e

crd: setup
	$(BIN)/kubeserve crd > crds/modeldeployments.kubeserve.io.yaml
	cp crds/modeldeployments.kubeserve.io.yaml charts/kubeserve/crds/

bench: setup
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/onnx_server.py

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache

docs: setup
	$(BIN)/python -m kubeserve.apidoc docs/api.md
