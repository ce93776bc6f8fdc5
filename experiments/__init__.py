"""The experiments (`python -m experiments.NAME`): synthetic (planning), math, ablations (the tuned
study), what they share (common.py), and the engine's benchmarks (bench.py, gpu_check.py)."""
