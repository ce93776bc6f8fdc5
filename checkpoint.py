"""
Pretrained checkpoints of the Llama / Qwen2 family, read without any Hugging Face library.

A checkpoint directory holds `config.json` (the architecture) and one or more `*.safetensors`
files (with `model.safetensors.index.json` naming the shard of each tensor when there are
several). The safetensors format is simple enough to read directly:

    [8 bytes: N, little-endian u64][N bytes: JSON header][raw tensor bytes]

The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
relative to the first byte after the header (plus an optional "__metadata__" entry). No pickle
anywhere, so a checkpoint cannot run code; every header field is validated, and a malformed
file raises ValueError naming the file and the tensor instead of loading something wrong.

Module names in model.py follow the Hugging Face layout, so `model.layers.0.self_attn.q_proj.weight`
becomes our `layers.0.self_attn.q_proj.weight`.

Run `python checkpoint.py DIR` to load a checkpoint and print its config and a greedy continuation
of a few token ids.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct

import torch
from torch import Tensor

from model import ModelConfig, Transformer

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 2**20  # the format caps the header at 100 MB


def _header(path: str) -> tuple[dict, int, int]:
    """The validated header of a safetensors file: (entries, start of data, data size)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than the 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path}: header length {n} does not fit in a file of {size} bytes")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object")
    header.pop("__metadata__", None)
    data_size, spans = size - 8 - n, []
    for name, e in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: needs exactly the fields dtype, shape, data_offsets")
        if e["dtype"] not in DTYPES:
            raise ValueError(f"{where}: unknown dtype {e['dtype']!r} (known: {', '.join(DTYPES)})")
        shape, offsets = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"{where}: shape {shape!r} must be a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ValueError(f"{where}: data_offsets {offsets!r} must be two integers")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ValueError(f"{where}: data_offsets {offsets} out of bounds (data is {data_size} bytes)")
        nbytes = math.prod(shape) * DTYPES[e["dtype"]].itemsize
        if end - begin != nbytes:
            raise ValueError(f"{where}: shape {shape} of {e['dtype']} needs {nbytes} bytes, offsets give {end - begin}")
        spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ValueError(f"{path}: tensors {n0!r} and {n1!r} overlap")
    return header, 8 + n, data_size


def read_safetensors(path: str, names: list[str] | None = None) -> dict[str, Tensor]:
    """Tensors of a safetensors file (all of them, or `names`), each read into its own memory."""
    header, start, _ = _header(path)
    missing = [n for n in names or [] if n not in header]
    if missing:
        raise ValueError(f"{path}: no tensor named {missing[0]!r}")
    out = {}
    with open(path, "rb") as f:
        for name in names or list(header):
            e = header[name]
            begin, end = e["data_offsets"]
            f.seek(start + begin)
            buf = bytearray(f.read(end - begin))
            t = torch.frombuffer(buf, dtype=DTYPES[e["dtype"]]) if buf else torch.empty(0, dtype=DTYPES[e["dtype"]])
            out[name] = t.reshape(e["shape"])
    return out


def write_safetensors(tensors: dict[str, Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write tensors in the safetensors format (contiguous, in name order, little-endian)."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad so that the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            f.write(raw)


# ---------------------------------------------------------------------------------------------
# Llama / Qwen2 checkpoints


def config_from_hf(hf: dict) -> ModelConfig:
    """Our ModelConfig from a Llama or Qwen2 `config.json`; anything we do not implement is refused."""
    kind = hf.get("model_type")
    if kind not in ("llama", "qwen2"):
        raise ValueError(f"model_type {kind!r} is not supported: this loader reads 'llama' and 'qwen2' checkpoints")
    # RoPE: `rope_theta` (+ `rope_scaling`) in older files, `rope_parameters` in newer ones
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or ({} if rope.get("rope_type", "default") == "default" else rope)
    if scaling:
        raise ValueError(f"RoPE scaling {scaling!r} is not implemented; only plain RoPE (rope_theta)")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    if hf.get("use_sliding_window") or any(t != "full_attention" for t in hf.get("layer_types") or []):
        raise ValueError("sliding-window attention is not implemented; only full attention")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (SwiGLU with silu only)")
    if kind == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
        raise ValueError("Llama checkpoints with attention_bias or mlp_bias are not supported")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, n_embd // n_head):
        raise ValueError(f"head_dim {hf['head_dim']} != hidden_size / num_attention_heads is not supported")
    return ModelConfig(vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=n_head,
                       n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=n_embd,
                       intermediate_size=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 4096),
                       rope_theta=float(theta), norm_eps=hf.get("rms_norm_eps", 1e-6),
                       qkv_bias=kind == "qwen2", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                       final_norm=True)


def _shards(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: needs a 'weight_map' object")
        return sorted({os.path.join(directory, s) for s in weight_map.values()})
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors files (and no model.safetensors.index.json)")
    return files


def load_pretrained(directory: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Transformer:
    """Our Transformer with the weights of a local Llama/Qwen2 checkpoint directory, in `dtype`."""
    with open(os.path.join(directory, "config.json")) as f:
        cfg = config_from_hf(json.load(f))
    with torch.device("meta"):  # no random init of weights that are about to be overwritten
        model = Transformer(cfg)
    expected = {k: v for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
    state: dict[str, Tensor] = {}
    for shard in _shards(directory):
        for name, t in read_safetensors(shard).items():
            ours = name[len("model."):] if name.startswith("model.") else name
            if ours == "lm_head.weight" and cfg.tie_embeddings:
                continue  # some tied checkpoints store the head too; it is the embedding
            if ours not in expected:
                if "rotary_emb" in ours:  # precomputed RoPE tables of old exports: we compute our own
                    continue
                raise ValueError(f"{shard}: tensor {name!r} has no counterpart in the model")
            if tuple(t.shape) != tuple(expected[ours].shape):
                raise ValueError(f"{shard}: tensor {name!r} has shape {tuple(t.shape)}, "
                                 f"the config implies {tuple(expected[ours].shape)}")
            state[ours] = t.to(dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{directory}: the checkpoint lacks {len(missing)} tensors, e.g. {missing[0]!r}")
    model = model.to_empty(device=device)
    model.load_state_dict(state, strict=not cfg.tie_embeddings)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model.to(dtype).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description="Load a local Llama/Qwen2 checkpoint and greedy-decode a few tokens.")
    ap.add_argument("directory")
    ap.add_argument("--ids", default="1,2,3", help="comma-separated prompt token ids")
    ap.add_argument("--tokens", type=int, default=8)
    args = ap.parse_args()
    model = load_pretrained(args.directory)
    print(model.cfg, f"\n{model.num_params() / 1e6:.1f}M parameters")
    ids = [int(i) for i in args.ids.split(",")]
    with torch.no_grad():
        for _ in range(args.tokens):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    print("greedy:", ids)


if __name__ == "__main__":
    main()
