# `make demo` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch (a bare `torch` requirement would pull a multi-GB CUDA build):
# its pip arguments live in scripts/pip-torch-args, which the Dockerfile reads too.
TORCH_ARGS := $(shell grep -v '^\#' scripts/pip-torch-args)

.PHONY: install demo demo-lexical test stubs docs-figures print-torch-args faults

$(VENV)/.installed: pyproject.toml scripts/pip-torch-args
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH_ARGS)
	$(VENV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/demo.sh

# The same with no model at all (lexical retrieval): for machines without hub access.
demo-lexical: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/demo.sh examples/qroute-lexical.yaml

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy qroute server indexer clients/python/qroute_client
	$(VENV)/bin/python -m pytest

# The fault harness (bench/faults.py): load, reloads, re-index, kill -9, SIGTERM, fuzz.
# Not part of `make test`; FAULTS_ARGS=--quick for a short development run.
faults: install
	$(VENV)/bin/python bench/faults.py $(FAULTS_ARGS)

stubs: install
	$(VENV)/bin/python proto/generate.py

# The figures in docs/ are rendered from their Graphviz sources (needs `dot`:
# Debian's graphviz package). Edit the .dot file, then run this and commit both.
docs-figures:
	for f in docs/figures/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done

# What tests/test_install.py resolves: the arguments exactly as the install step uses them.
print-torch-args:
	@echo $(TORCH_ARGS)
