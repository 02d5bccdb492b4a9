# `make demo` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo demo-lexical test stubs docs-figures

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH)"
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

stubs: install
	$(VENV)/bin/python proto/generate.py

# The figures in docs/ are rendered from their Graphviz sources (needs `dot`:
# Debian's graphviz package). Edit the .dot file, then run this and commit both.
docs-figures:
	for f in docs/figures/*.dot; do dot -Tsvg "$$f" -o "$${f%.dot}.svg"; done
