# arlm: every target works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel on this machine's disk; override with e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DEMO   := data/python-docs

.PHONY: install test test-fast demo bench lint clean

install: $(STAMP)

# torch first, so that the project's unpinned `torch` finds it installed and pulls nothing else.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/arlm tokenize --builtin python-docs --out $(DEMO) --vocab-size 2000 --force
	$(BIN)/arlm tokenize --tokenizer $(DEMO)/tokenizer.model --text "def greet(name): return f'Hello, {name}!'"
	$(BIN)/arlm tokenize --tokenizer $(DEMO)/tokenizer.model --text "Ünïcödé and emoji 🐍 still round-trip"
	$(BIN)/arlm tokenize --tokenizer $(DEMO)/tokenizer.model --decode "1100 502 1032 1914 1941 602 844"
	$(BIN)/arlm train --data $(DEMO) --out checkpoints/demo --model lstm --time-budget 45s \
		--eval-every 50 --force
	$(BIN)/arlm generate checkpoints/demo --prompt "The " --max-tokens 120 --top-k 40 \
		--temperature 0.8 --seed 1

# The benchmarks of issue 5 (~27 minutes here): figures, ratios and a table in bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff check arlm tests bench
	$(BIN)/ruff format --check arlm tests bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis $(DEMO) \
		checkpoints/demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
