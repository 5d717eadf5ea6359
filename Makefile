# arlm: every target works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch first: the CPU wheel where pip finds one locally; PyPI's is a CUDA build. Override, e.g.
# `make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"`.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
DEMO   := data/demo
DEMO_BUDGET ?= 75s
# make compare: tinyshakespeare when ../shared/data has it, else the built-in corpus
SHAKESPEARE := ../shared/data/tinyshakespeare
LADDER_TEXT := $(if $(wildcard $(SHAKESPEARE)/train.txt),$(SHAKESPEARE)/train.txt --val $(SHAKESPEARE)/valid.txt,--builtin python-docs)
LADDER_DATA := data/ladder-char
LADDER := checkpoints/ladder
LADDER_BUDGET ?= 40s
RUNG    = $(BIN)/arlm train --data $(LADDER_DATA) --force --eval-every 100 --time-budget $(LADDER_BUDGET)

# make test-floor: the lowest versions pyproject.toml allows (each >= read as ==), in a venv of
# their own; PyPI's torch is a CUDA build of a few GB
FLOOR  := build/floor-venv
FLOORS  = $(shell $(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(d.replace(">=", "==") for d in p["dependencies"] + p["optional-dependencies"]["dev"]))')

.PHONY: install test test-fast test-floor demo compare readme bench lint clean

install: $(STAMP)

# torch first, so that the project's unpinned `torch` finds it installed and pulls nothing else.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

# Does arlm still work with the versions it promises? (A newer API used without raising a floor.)
test-floor:
	rm -rf $(FLOOR)
	$(PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/pip install --quiet $(FLOORS)
	$(FLOOR)/bin/pip install --quiet --no-deps -e .
	$(FLOOR)/bin/pytest -q -m "not slow" -p no:cacheprovider

# What it trains was chosen by measurement (python -m bench.demo_choice; README, "Quick start"):
# of five tokenizers and models given 60 s each, BPE-500 with an LSTM 2x256 scored best.
demo: $(STAMP)
	$(BIN)/arlm tokenize --builtin python-docs --out $(DEMO) --vocab-size 500 --force
	$(BIN)/arlm tokenize --tokenizer $(DEMO)/tokenizer.model --text "def greet(name): return f'Hello, {name}!'"
	$(BIN)/arlm tokenize --tokenizer $(DEMO)/tokenizer.model --text "Ünïcödé and emoji 🐍 still round-trip"
	$(BIN)/arlm tokenize --tokenizer $(DEMO)/tokenizer.model --decode "492 413 421 317 437 311 280 421 424 495"
	$(BIN)/arlm train --data $(DEMO) --out checkpoints/demo --model lstm --time-budget $(DEMO_BUDGET) \
		--force
	$(BIN)/arlm generate checkpoints/demo --prompt "The " --max-tokens 200 --top-k 40 \
		--temperature 0.7 --seed 1
	@echo
	@echo "learning curve: checkpoints/demo/learning_curve.png"
	@echo "next:"
	@echo "  $(BIN)/arlm train --data YOUR_TEXT.txt --time-budget 3m --out checkpoints/mine   # your own text"
	@echo "  $(BIN)/arlm serve checkpoints/demo    # a page and an OpenAI-style API at http://127.0.0.1:8000/"
	@echo "  make compare                          # every model of the course, side by side"

# The course's story in one table: unigram -> n-grams -> HMM -> a feed-forward network over a
# window -> Elman -> Jordan -> LSTM -> GRU, all on the same characters, scored on the same
# validation text (~5 minutes). The ladder's folder is this target's own: it starts afresh.
compare: $(STAMP)
	$(BIN)/arlm tokenize $(LADDER_TEXT) --model-type char --out $(LADDER_DATA) --force
	rm -rf $(LADDER)
	$(BIN)/arlm train --data $(LADDER_DATA) --force --model ngram --order 1 --out $(LADDER)/1-unigram
	$(BIN)/arlm train --data $(LADDER_DATA) --force --model ngram --order 3 --out $(LADDER)/2-trigram
	$(BIN)/arlm train --data $(LADDER_DATA) --force --model ngram --order 6 --out $(LADDER)/3-6gram
	$(RUNG) --model hmm --states 64 --lr 0.1 --weight-decay 0 --out $(LADDER)/4-hmm
	$(RUNG) --model ffnn --context 8 --embedding-dim 32 --hidden-size 512 --num-layers 1 \
		--out $(LADDER)/5-ffnn
	$(RUNG) --model elman --out $(LADDER)/6-elman
	$(RUNG) --model jordan --out $(LADDER)/7-jordan
	$(RUNG) --model lstm --out $(LADDER)/8-lstm
	$(RUNG) --model gru --out $(LADDER)/9-gru
	$(BIN)/arlm compare $(LADDER)/*/ --data $(LADDER_DATA) --plot $(LADDER)/compare.png

# The README run as written, in a fresh folder, with small budgets (tests/readme_run.py).
readme: $(STAMP)
	$(BIN)/python -m tests.readme_run

# The benchmarks of issue 5 (~27 minutes here): figures, ratios and a table in bench/results/.
bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff check arlm tests bench
	$(BIN)/ruff format --check arlm tests bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis $(DEMO) \
		$(LADDER_DATA)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
