# The two commands a fresh clone needs are `make run` and `make test`;
# both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run test fuzz report lint format bench clean

install: $(BIN)/docdesk

$(BIN)/docdesk: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: install
	$(BIN)/docdesk serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest

# The hostile-input suite at volume: at least 10,000 generated callbacks.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/fuzz

# docs/reliability.md, from the suites at full volume and the benchmarks.
report: install
	$(BIN)/python scripts/reliability_report.py

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# Each prints its figures beside a baseline from the same run; the
# throughput ones need wrk (Debian's package).
bench: install
	-$(BIN)/python benchmarks/save_large_file.py
	-$(BIN)/python benchmarks/callbacks.py
	-$(BIN)/python benchmarks/small_saves.py
	-$(BIN)/python benchmarks/editor_configs.py
	-$(BIN)/python benchmarks/scale_out.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
