# A newcomer's entry points: `make demo` and `make test` each set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv constraints demo test lint typecheck security unit bench reliability clean tools

venv: $(STAMP)

# constraints.txt pins every distribution (orderpipe package builds Lambda from it too), so a
# new polars or botocore release changes nothing until that file does.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "orderpipe needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# After adding or upgrading a dependency (pip install -U NAME in the venv): re-pin, review the diff.
constraints: venv
	{ sed -n '/^#/p' constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check | grep -iv '^orderpipe'; \
	} > constraints.txt.new
	mv constraints.txt.new constraints.txt
	@touch $(STAMP)

# Template scanners with heavy pinned dependencies live in their own venv, away from the app's.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'checkov==3.3.30'
	@touch $(TOOLS_STAMP)

demo: venv
	$(BIN)/orderpipe demo

lint: venv tools
	$(BIN)/ruff check core handlers tests bench
	$(BIN)/ruff format --check core handlers tests bench
	$(BIN)/cfn-lint cloudformation/template.yaml
	$(TOOLS)/bin/checkov -f cloudformation/template.yaml --framework cloudformation --compact --quiet --skip-download

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q

# Static security check; each accepted finding is justified inline with `# nosec BXXX`.
security: venv
	$(BIN)/bandit -q -r core handlers

test: lint typecheck security unit

# The fault scenarios, recorded (a failed one is written as FAILED, not hidden), then
# docs/reliability.md from them and bench/out/load.json.
reliability: venv
	rm -f build/reliability/scenarios.jsonl
	-ORDERPIPE_RELIABILITY_RESULTS=build/reliability/scenarios.jsonl $(BIN)/pytest -q tests/integration/test_faults.py
	$(BIN)/python bench/reliability_report.py

bench: venv
	$(BIN)/python bench/validate_bench.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
