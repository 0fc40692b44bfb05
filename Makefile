# kubeserve developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := onnx,storage,package,tensorflow,torchserve,test,lint,bench
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
export ORT_DISABLE_TELEMETRY := 1

# The real control plane of tests/cluster, found through $KUBEBUILDER_ASSETS (envtest's
# convention). Here it is ../shared/k8s unpacked into .build/k8s; elsewhere set the variable
# to setup-envtest's folder (add kube-controller-manager and kube-scheduler beside it).
SHARED_K8S ?= ../shared/k8s
ifneq ($(wildcard $(SHARED_K8S)/unpack.sh),)
export KUBEBUILDER_ASSETS ?= $(CURDIR)/.build/k8s
export KUBESERVE_THIRD_PARTY_CRDS ?= $(abspath $(SHARED_K8S)/crds)
endif

.PHONY: setup assets test unit cluster lint demo images e2e crd generate bench clean docs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	# pyproject's tfserving-api extra, without its `tensorflow` requirement (tensorflow-cpu has it).
	$(BIN)/pip install --quiet --no-deps 'tensorflow-serving-api==2.21.0'
	$(BIN)/python scripts/install-helm.py
	rm -f $(VENV)/.installed-* && touch $@

assets:
	@if [ -f $(SHARED_K8S)/unpack.sh ]; then bash $(SHARED_K8S)/unpack.sh .build/k8s; \
	else echo "assets: no $(SHARED_K8S); tests/cluster uses \$$KUBEBUILDER_ASSETS or skips"; fi
	@bash scripts/install-prometheus.sh || echo "assets: no Prometheus; test_prometheus.py skips"

lint: setup
	$(BIN)/ruff check operator tests bench scripts
	$(BIN)/ruff format --check operator tests bench scripts
	$(BIN)/mypy

# Everything but the kind e2e suite: unit, integration (kmock), the real control plane
# (tests/cluster), runtimes, chart, images.
test: setup lint assets
	$(BIN)/python -m pytest

cluster: setup assets
	$(BIN)/python -m pytest tests/cluster

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

# Everything generated from the code: the CRD and the chart's files (dashboard, adapter rules).
generate: crd
	$(BIN)/python -m kubeserve.chartfiles charts/kubeserve/files
	cd operator && ../$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \
		--grpc_python_out=. kubeserve/dataplane/onnx_server/oip/inference.proto

bench: setup
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/onnx_server.py

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache

docs: setup
	$(BIN)/python -m kubeserve.apidoc docs/api.md
