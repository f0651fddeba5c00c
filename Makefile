# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orchestrator run --config config/demo.toml --exit-when-idle --migrate
	@echo
	@$(BIN)/orchestrator status --config config/demo.toml
	@echo
	@echo "Results: var/demo/results/<job name>/{output.jsonl,errors.jsonl,job.json}"
	@echo "Inspect one job: $(BIN)/orchestrator show --config config/demo.toml cheese-survey"

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tests bench migrations
	$(BIN)/ruff format --check orchestrator tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The Docker image's pinned dependencies (runtime + postgres extra, with hashes), for Linux x86_64
# and Python 3.11. Run after changing [project] dependencies; tests/container checks they agree.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --extra postgres --generate-hashes --quiet \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header \
		--output-file docker/requirements.lock.new
	{ echo '# The image'"'"'s dependencies, pinned with hashes: `make lock` regenerates this file from'; \
	  echo '# pyproject.toml (runtime dependencies + the postgres extra). Do not edit by hand.'; \
	  cat docker/requirements.lock.new; } > docker/requirements.lock
	rm docker/requirements.lock.new

clean:
	rm -rf $(VENV) var/demo .pytest_cache .mypy_cache .ruff_cache
