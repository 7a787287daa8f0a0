# The commands a contributor needs. `make test` works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest stress docs bench run streams install-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check fluid tests examples bench
	$(BIN)/ruff format --check fluid tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict fluid tests

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# Fault injection for longer: every scenario of tests/stress for 20 s each;
# then the rest of the suite with every async test on the shuffling loop
# (tests/_interleave.py) under a fresh seed, shown in the header and test ids,
# and the Hypothesis state machines at ten times their examples.
stress: $(STAMP)
	FLUID_STRESS_SECONDS=$${FLUID_STRESS_SECONDS:-20} FLUID_STRESS_REPORT=stress-report.json \
		$(BIN)/pytest tests/stress -o timeout=300 -q
	FLUID_INTERLEAVE_SEED=$${FLUID_INTERLEAVE_SEED:-random} \
		FLUID_STRESS_SECONDS=$${FLUID_STRESS_SECONDS:-20} \
		$(BIN)/pytest tests --ignore=tests/stress -o timeout=300 -q

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# Benchmarks, in environments of their own: fluid against hand-written asyncio
# (python -m bench) and against aio-fluid, aiomisc and aiojobs (python -m
# bench.others), on the asyncio loop and on uvloop; then docs/benchmarks.md and
# its chart (python -m bench.report). aio-fluid installs a package also named
# `fluid`, so it gets a virtualenv without this project. About 5 minutes;
# `make bench BENCH_FLAGS=--quick` checks the whole chain in under a minute.
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed
AIOFLUID_VENV := .venv-aiofluid
AIOFLUID_STAMP := $(AIOFLUID_VENV)/.installed
BENCH_RESULTS := .bench
BENCH_FLAGS ?=

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet -e '.[bench,redis]' uvloop
	touch $(BENCH_STAMP)

$(AIOFLUID_STAMP): Makefile
	$(PYTHON) -m venv $(AIOFLUID_VENV)
	$(AIOFLUID_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIOFLUID_VENV)/bin/python -m pip install --quiet --upgrade aio-fluid uvloop
	touch $(AIOFLUID_STAMP)

bench: $(BENCH_STAMP) $(AIOFLUID_STAMP)
	mkdir -p $(BENCH_RESULTS)
	for loop in asyncio uvloop; do \
		$(BENCH_BIN)/python -m bench --loop $$loop $(BENCH_FLAGS) \
			--json $(BENCH_RESULTS)/suite-$$loop.json || exit 1; \
		$(BENCH_BIN)/python -m bench.others --loop $$loop $(BENCH_FLAGS) \
			--aiofluid-python $(AIOFLUID_VENV)/bin/python \
			--json $(BENCH_RESULTS)/others-$$loop.json || exit 1; \
	done
	$(BENCH_BIN)/python -m bench.report --results $(BENCH_RESULTS) \
		--markdown docs/benchmarks.md --chart docs/benchmarks.png

run: $(STAMP)
	$(BIN)/python examples/pipeline.py

# A producer and a consumer group of three processes on Redis Streams: starts
# its own redis-server (installed: apt-get install redis-server); Ctrl-C stops all.
streams: $(STAMP)
	$(BIN)/python examples/stream_group.py

# pip install . in a fresh virtualenv, then the fluid command, a missing
# extra's message and the [starlette] extra, as a user meets them (.ci/run).
install-check: $(STAMP)
	$(BIN)/python tests/install_check.py

clean:
	rm -rf $(VENV) site .mypy_cache .pytest_cache .ruff_cache
	rm -rf $(BENCH_VENV) $(AIOFLUID_VENV) $(BENCH_RESULTS)
