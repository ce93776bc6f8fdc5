# Every target installs the Python requirements first (once; re-run when requirements.txt changes).
PYTHON ?= python3

.PHONY: test bench deps clean

deps: out/.deps

out/.deps: requirements.txt
	$(PYTHON) -m pip install -q -r requirements.txt
	@mkdir -p out && touch $@

# correctness: exactness of the likelihood, equivalence of tree/cached forwards, distributions (~1 min)
test: out/.deps
	$(PYTHON) -m pytest

# speed of the engine on the tiny model -> results/bench.md (a few minutes on 2 cores)
bench: out/.deps
	$(PYTHON) bench.py

clean:
	rm -rf out .pytest_cache __pycache__ tests/__pycache__
