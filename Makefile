# Everything a new machine needs comes from here: `make demo` and `make test` set up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test pytest lint typecheck browser bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/chorus demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The Flower browser test needs Debian's chromium; install it when we can (root, apt), else
# that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	      || (apt-get update -qq >/dev/null 2>&1 \
	          && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1)) \
	  || echo "chromium not installed: the Flower browser test will be skipped"; }

# The checks run beside the tests and chromium installs beside the venv (apt waits on the network,
# ruff and mypy take a core for half a minute); any failure fails `make test`.
test:
	$(MAKE) --no-print-directory -j4 lint typecheck pytest

# Two processes (each with its own Redis, simulator and workers), a module's tests together.
pytest: install browser
	$(BIN)/pytest -n 2 --dist loadfile

# The reliability suite at full size: 100 tasks per pattern and fault, figures printed at the end.
chaos: install
	CHORUS_CHAOS_FULL=1 CHORUS_CHAOS_TASKS=100 $(BIN)/pytest tests/test_chaos.py \
	  tests/test_hostile_input.py tests/test_sentinel.py tests/test_tool_durability.py \
	  tests/test_batch_chaos.py

# Every figure beside its baseline (raw Celery or the ideal), one table; then the audit cost.
bench: install
	$(BIN)/python -m bench
	$(BIN)/python -m bench.audit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
