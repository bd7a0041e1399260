# A newcomer's entry points: `make demo` and `make test` each set up what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv constraints demo check test lint typecheck security unit suite bench bench-peers \
	reliability clean tools compat

venv: $(STAMP)

# constraints.txt pins every distribution (orderpipe package builds Lambda from it too), so a
# new polars or botocore release changes nothing until that file does.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "orderpipe needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# After adding or upgrading a dependency (pip install -U NAME in the venv; pip uninstall what you
# drop, since this pins whatever the venv holds): re-pin, review the diff.
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

# The everyday loop, under a minute: ruff, mypy and the unit tests not marked slow. Tests under
# tests/integration are marked `integration` by tests/conftest.py; `slow` is marked by hand.
check: venv
	$(BIN)/ruff check core handlers tests bench
	$(BIN)/ruff format --check core handlers tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not integration and not slow"

unit: venv
	$(BIN)/pytest -q -m "not integration"

# Every test, slow and integration ones included.
suite: venv
	$(BIN)/pytest -q

# Static security check; each accepted finding is justified inline with `# nosec BXXX`.
security: venv
	$(BIN)/bandit -q -r core handlers

test: lint typecheck security suite

# The fault scenarios, recorded (a failed one is written as FAILED, not hidden), then
# docs/reliability.md from them and bench/out/load.json.
reliability: venv
	rm -f build/reliability/scenarios.jsonl
	-ORDERPIPE_RELIABILITY_RESULTS=build/reliability/scenarios.jsonl $(BIN)/pytest -q tests/integration/test_faults.py
	$(BIN)/python bench/reliability_report.py

# The second emulator (not part of `test`): S3, SQS, SNS, EventBridge and SES on LocalStack,
# DynamoDB on moto; see docs/reliability.md. LocalStack needs Python >= 3.12 and its own venv.
COMPAT := .venv-compat
COMPAT_STAMP := $(COMPAT)/.installed-stamp
COMPAT_PYTHON ?= $(shell bash tests/compat/python.sh)

compat: venv $(COMPAT_STAMP)
	APP_VENV=$(VENV) COMPAT_VENV=$(COMPAT) bash tests/compat/run.sh

$(COMPAT_STAMP): tests/compat/requirements.txt tests/compat/constraints.txt
	@test -n "$(COMPAT_PYTHON)" || { echo "make compat needs Python 3.12 or newer: set COMPAT_PYTHON=/path/to/python3.12" >&2; exit 1; }
	rm -rf $(COMPAT)
	$(COMPAT_PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install --quiet -r tests/compat/requirements.txt -c tests/compat/constraints.txt
	@touch $(COMPAT_STAMP)

bench: venv
	$(BIN)/python bench/validate_bench.py

# The engine beside a whole-frame polars version and the validation libraries (docs/validation.md).
bench-peers: venv
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,peers]'
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) $(TOOLS) $(COMPAT) .pytest_cache .mypy_cache .ruff_cache .hypothesis
