"""Real checkpoints without Hugging Face libraries: safetensors weights + config.json (checkpoint.py),
the byte-level BPE tokenizer (tokenizer.py) and chat templates (chat.py)."""
