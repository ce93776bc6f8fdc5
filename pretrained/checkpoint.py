"""
Pretrained checkpoints of the Llama / Qwen2 / Qwen3 families, read without any Hugging Face library.

A checkpoint directory holds `config.json` (the architecture) and one or more `*.safetensors`
files (with `model.safetensors.index.json` naming the shard of each tensor when there are
several). The safetensors format is simple enough to read directly:

    [8 bytes: N, little-endian u64][N bytes: JSON header][raw tensor bytes]

The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
relative to the first byte after the header (plus an optional "__metadata__" entry). No pickle
anywhere, so a checkpoint cannot run code; every header field is validated, and a malformed
file raises ValueError naming the file and the tensor instead of loading something wrong.

Module names in model.py follow the Hugging Face layout, so `model.layers.0.self_attn.q_proj.weight`
becomes our `layers.0.self_attn.q_proj.weight`. `config_from_hf` maps config.json onto ModelConfig
and refuses, naming the field, whatever the model does not implement; `stop_ids` reads the ids
that end a completion (generation_config.json's EOS ids and the tokenizer's EOS).

Run `python -m pretrained.checkpoint DIR` to load a checkpoint and print its config and a greedy continuation
of a few token ids.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import struct
import warnings

import torch
from torch import Tensor

from tools.cli import read_json_object
from model import ModelConfig, Transformer

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 2**20  # the format caps the header at 100 MB


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """json.loads hook: a JSON object that names a key twice is refused (the format disallows it;
    a plain json.loads would silently keep the last one)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _check_metadata(metadata: object) -> None:
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"__metadata__ must map strings to strings, got {metadata!r}")


def _header(path: str) -> tuple[dict, int, int]:
    """The validated header of a safetensors file: (tensor entries, start of data, data size).

    The rules are the format's own (https://github.com/huggingface/safetensors, "Format"): the
    header is a UTF-8 JSON object (first byte '{'), at most 100 MB; no key twice;
    an optional "__metadata__" maps strings to strings; every other key is a tensor with exactly
    dtype, shape, data_offsets, whose byte count is prod(shape) * itemsize; and the data buffer is
    covered exactly: the tensors, sorted by offset, start at 0, each begins where the previous one
    ends (no gap, no overlap) and the last ends at the end of the file (no trailing bytes), so
    that no byte of the file goes unchecked (no polyglot files).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than the 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path}: header length {n} does not fit in a file of {size} bytes")
        text = f.read(n)
    if not text.startswith(b"{"):
        raise ValueError(f"{path}: the header must be a JSON object (its first byte '{{')")
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the header is not valid JSON ({e})") from None
    except ValueError as e:  # a duplicate key
        raise ValueError(f"{path}: the header is ambiguous: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object")
    if "__metadata__" in header:
        try:
            _check_metadata(header.pop("__metadata__"))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
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
    covered, last = 0, None  # bytes [0, covered) are accounted for by the tensors so far
    for begin, end, name in sorted(spans):
        if begin < covered:
            raise ValueError(f"{path}: tensors {last!r} and {name!r} overlap")
        if begin > covered:
            raise ValueError(f"{path}: a gap of {begin - covered} bytes before tensor {name!r} belongs to no tensor")
        covered, last = end, name
    if covered != data_size:
        raise ValueError(f"{path}: {data_size - covered} trailing bytes after the last tensor belong to no tensor")
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
    """Write tensors in the safetensors format (contiguous, in name order, little-endian).

    Raises ValueError for what the format cannot hold: a tensor named "__metadata__" (the key of
    the metadata), a name that is not a string, metadata that is not a str -> str map, a dtype
    without a safetensors name.
    """
    if "__metadata__" in tensors:
        raise ValueError("a tensor cannot be named '__metadata__' (the format's key for metadata); rename it")
    if not all(isinstance(name, str) for name in tensors):
        raise ValueError(f"tensor names must be strings, got {[n for n in tensors if not isinstance(n, str)][:3]}")
    if metadata is not None:
        _check_metadata(metadata)
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
# Llama / Qwen2 / Qwen3 checkpoints: config.json -> ModelConfig
#
# The reference is transformers' LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM: every
# config.json field those models read is either implemented here or checked to have the value we
# implement, and refused with an error naming it otherwise; fields they ignore we ignore too.

FAMILIES = ("llama", "qwen2", "qwen3")
# fields that must have the value we implement (absent = transformers' default, which is that value)
FIXED_FIELDS = {"hidden_act": "silu", "attention_dropout": 0.0, "partial_rotary_factor": 1.0, "use_sliding_window": False,
                "mlp_bias": False, "attention_bias": False}
FIXED_WHY = {"hidden_act": "the MLP is SwiGLU with silu", "attention_dropout": "the model has no dropout",
             "partial_rotary_factor": "RoPE rotates the whole head", "use_sliding_window": "attention is full",
             "mlp_bias": "the MLP has no biases", "attention_bias": "Llama and Qwen3 projections have no biases here"}
ROPE_KEYS = {"default": {"rope_type", "type", "rope_theta", "partial_rotary_factor"},
             "llama3": {"rope_type", "type", "rope_theta", "partial_rotary_factor", "factor", "low_freq_factor",
                        "high_freq_factor", "original_max_position_embeddings"}}


def _number(value: object, field: str, kind: type = float) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ValueError(f"config.json: {field} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"config.json: {field} must be finite, got {value!r}")
    return value


def rope_from_hf(hf: dict) -> dict:
    """The RoPE fields of ModelConfig from a config.json, in either layout.

    Older files: `rope_theta` at the top and `rope_scaling` (null, or a dict with `rope_type` or
    `type`); newer ones (transformers >= 5): everything in `rope_parameters`. As in transformers,
    `rope_scaling` wins when both are there, a missing `rope_theta` inside is taken from the top
    level, and llama3's missing `original_max_position_embeddings` from the top level's
    `original_max_position_embeddings` or `max_position_embeddings`. Implemented: plain RoPE and
    `llama3`; any other type (linear, dynamic, yarn, longrope, ...), per-layer-type parameters or an
    unknown key is refused, naming the field.
    """
    field = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    rope = hf.get(field) or {}
    if not isinstance(rope, dict):
        raise ValueError(f"config.json: {field} must be an object, got {rope!r}")
    if any(isinstance(v, dict) for v in rope.values()):
        raise ValueError(f"config.json: {field} gives RoPE parameters per layer type ({', '.join(rope)}); "
                         "only one RoPE for all layers is implemented")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ROPE_KEYS:
        raise ValueError(f"config.json: {field}.rope_type {kind!r} (RoPE scaling) is not implemented; "
                         f"implemented: {', '.join(ROPE_KEYS)}")
    unknown = sorted(set(rope) - ROPE_KEYS[kind])
    if unknown:
        raise ValueError(f"config.json: {field}.{unknown[0]} is not implemented for rope_type {kind!r}")
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"config.json: {field}.partial_rotary_factor {rope['partial_rotary_factor']} is not "
                         "implemented (RoPE rotates the whole head)")
    out = {"rope_theta": float(_number(rope.get("rope_theta", hf.get("rope_theta", 10000.0)), "rope_theta"))}
    if kind == "llama3":
        for key in ("factor", "low_freq_factor", "high_freq_factor"):
            if key not in rope:
                raise ValueError(f"config.json: {field}.{key} is missing (llama3 RoPE scaling needs it)")
        original = rope.get("original_max_position_embeddings",
                            hf.get("original_max_position_embeddings", hf.get("max_position_embeddings")))
        out |= {"rope_type": "llama3", "rope_factor": float(_number(rope["factor"], f"{field}.factor")),
                "rope_low_freq_factor": float(_number(rope["low_freq_factor"], f"{field}.low_freq_factor")),
                "rope_high_freq_factor": float(_number(rope["high_freq_factor"], f"{field}.high_freq_factor")),
                "rope_original_max_len": _number(original, f"{field}.original_max_position_embeddings", int)}
        if not (out["rope_factor"] >= 1 and 0 < out["rope_low_freq_factor"] < out["rope_high_freq_factor"]
                and out["rope_original_max_len"] > 0):
            raise ValueError(f"config.json: {field}: llama3 RoPE scaling needs factor >= 1, 0 < low_freq_factor < "
                             "high_freq_factor and original_max_position_embeddings > 0")
    return out


def config_from_hf(hf: dict) -> ModelConfig:
    """Our ModelConfig from a Llama, Qwen2 or Qwen3 `config.json` (a dict); anything the model does
    not implement is refused with a ValueError naming the field.

    The families differ in three places: Qwen2 has q/k/v biases; Qwen3 has none but RMS-normalises
    each query and key head before RoPE (q_norm / k_norm) and sets `head_dim` itself (default 128,
    as transformers' Qwen3Config); Llama 3.1+ scale their RoPE frequencies (`rope_from_hf`).
    """
    if not isinstance(hf, dict):
        raise ValueError("config.json must hold a JSON object")
    kind = hf.get("model_type")
    if kind not in FAMILIES:
        raise ValueError(f"config.json: model_type {kind!r} is not supported: this loader reads {', '.join(FAMILIES)}")
    for field, value in FIXED_FIELDS.items():
        if field == "attention_bias" and kind == "qwen2":
            continue  # transformers' Qwen2 ignores it: q/k/v always have biases, o_proj never
        if field in hf and hf[field] is not None and hf[field] != value:
            raise ValueError(f"config.json: {field} {hf[field]!r} is not implemented ({FIXED_WHY[field]}: {value!r})")
    if any(t != "full_attention" for t in hf.get("layer_types") or []):
        raise ValueError(f"config.json: layer_types {sorted(set(hf['layer_types']))} asks for sliding-window "
                         "attention, which is not implemented (only full_attention)")
    if hf.get("quantization_config"):
        raise ValueError("config.json: quantization_config: quantized checkpoints are not supported; use the "
                         "bf16/fp16/fp32 weights")
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if field not in hf:
            raise ValueError(f"config.json: the field {field} is missing")
        _number(hf[field], field, int)
    for field, number in [("num_key_value_heads", int), ("max_position_embeddings", int), ("rms_norm_eps", float)]:
        if hf.get(field) is not None:
            _number(hf[field], field, number)
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim", 128 if kind == "qwen3" else None)
    return ModelConfig(vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"], n_head=n_head,
                       n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=n_embd,
                       intermediate_size=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 4096),
                       norm_eps=hf.get("rms_norm_eps", 1e-6), qkv_bias=kind == "qwen2",
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)), final_norm=True,
                       head_dim=None if head_dim is None else _number(head_dim, "head_dim", int),
                       qk_norm=kind == "qwen3", **rope_from_hf(hf))


def _shards(directory: str) -> list[str]:
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        weight_map = read_json(directory, "model.safetensors.index.json").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: needs a 'weight_map' object")
        return sorted({os.path.join(directory, s) for s in weight_map.values()})
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors files (and no model.safetensors.index.json)")
    return files


def read_json(directory: str, name: str, required: bool = True) -> dict | None:
    """The JSON object in `directory`/`name` (None if it is absent and not `required`); a missing
    required file or one that is not a JSON object raises ValueError naming it."""
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        if required:
            raise ValueError(f"{directory}: no {name} (is it a Llama/Qwen checkpoint directory?)")
        return None
    return read_json_object(path)


def load_pretrained(directory: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Transformer:
    """Our Transformer with the weights of a local Llama/Qwen2/Qwen3 checkpoint directory (or a
    llama-architecture .gguf file, converted once by pretrained/gguf.py), in `dtype`."""
    if str(directory).endswith(".gguf"):
        from pretrained.gguf import checkpoint_dir
        directory = checkpoint_dir(directory)
    try:
        cfg = config_from_hf(read_json(directory, "config.json"))
    except ValueError as e:  # name the checkpoint: "DIR/config.json: model_type ..."
        raise ValueError(f"{os.path.join(directory, '')}{e}" if str(e).startswith("config.json") else str(e)) from None
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


def _token_ids(value: object, where: str) -> list[int]:
    """An `eos_token_id` field: one id or a list of ids (None: none)."""
    ids = [] if value is None else value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"{where}: eos_token_id must be a token id or a list of ids, got {value!r}")
    return ids


def stop_ids(directory: str) -> set[int]:
    """The token ids that end a completion of this checkpoint: any of them stops decoding.

    generation_config.json's `eos_token_id` (one id or a list: Qwen2.5/Qwen3 instruct stop on
    <|im_end|> and <|endoftext|>, Llama 3.x instruct on <|eot_id|>, <|eom_id|> and
    <|end_of_text|>); config.json's when generation_config.json has none (what transformers'
    generate falls back to); plus the tokenizer's EOS token (tokenizer_config.json's `eos_token`,
    looked up in tokenizer.json), which is what a chat template closes a turn with.
    Raises ValueError if an id is not a token id of the model, or if no stop id is found at all.
    """
    config = read_json(directory, "config.json")
    generation = read_json(directory, "generation_config.json", required=False) or {}
    source = "generation_config.json" if "eos_token_id" in generation else "config.json"
    ids = set(_token_ids((generation if "eos_token_id" in generation else config).get("eos_token_id"),
                         os.path.join(directory, source)))
    eos = (read_json(directory, "tokenizer_config.json", required=False) or {}).get("eos_token")
    if isinstance(eos, dict):  # an AddedToken written out: {"content": ..., "special": ...}
        eos = eos.get("content")
    if eos is not None:
        spec = read_json(directory, "tokenizer.json")
        known = {t.get("content"): t.get("id") for t in spec.get("added_tokens") or []}
        known = (spec.get("model") or {}).get("vocab", {}) | known
        if eos not in known:
            raise ValueError(f"{directory}: tokenizer_config.json's eos_token {eos!r} is not a token of tokenizer.json")
        ids.add(known[eos])
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and any(i >= vocab for i in ids):
        raise ValueError(f"{directory}: stop id {max(ids)} is not below the model's vocab_size {vocab}")
    if not ids:
        raise ValueError(f"{directory}: no stop token: add eos_token_id to generation_config.json (or eos_token "
                         "to tokenizer_config.json)")
    return ids


# ---------------------------------------------------------------------------------------------
# The project's own .pt files (sft.py and rlvr.py checkpoints, saved rollouts): plain data only.
#
# torch.load unpickles, and a pickle may name any Python callable to be run while it loads.
# With weights_only=True torch's unpickler accepts only tensors and plain containers (dict,
# list, tuple, str, numbers, None) and refuses anything else, so a crafted file cannot run code.
# Our files therefore hold nothing else: a dataclass is saved as the dict
# {"__dataclass__": its class name, "fields": {...}} and rebuilt on loading from the classes the
# caller allows.

DATACLASS_TAG = "__dataclass__"


def _to_plain(obj):
    """obj with every dataclass inside it turned into a tagged dict (containers without one are
    returned as they are, so a state_dict keeps its OrderedDict type and `_metadata`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {DATACLASS_TAG: type(obj).__name__,
                "fields": {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        new = {k: _to_plain(v) for k, v in obj.items()}
        return obj if all(new[k] is v for k, v in obj.items()) else new
    if isinstance(obj, (list, tuple)):
        new = [_to_plain(v) for v in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else type(obj)(new)
    return obj


def _from_plain(obj, kinds: dict[str, type], where: str):
    """The inverse of _to_plain for the dataclasses named in `kinds`; any other tag is refused."""
    if isinstance(obj, dict) and DATACLASS_TAG in obj:
        name = obj[DATACLASS_TAG]
        if name not in kinds or not isinstance(obj.get("fields"), dict):
            raise ValueError(f"{where} holds a {name!r} record where one of {sorted(kinds) or 'none'} was expected")
        try:
            return kinds[name](**{k: _from_plain(v, kinds, where) for k, v in obj["fields"].items()})
        except TypeError as e:  # fields renamed or removed since the file was written
            raise ValueError(f"{where}: its {name} record does not fit this version of the code ({e}); "
                             "write it again") from None
    if isinstance(obj, dict):
        new = {k: _from_plain(v, kinds, where) for k, v in obj.items()}
        return obj if all(new[k] is v for k, v in obj.items()) else new
    if isinstance(obj, (list, tuple)):
        new = [_from_plain(v, kinds, where) for v in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else type(obj)(new)
    return obj


def save_pt(obj: dict, path: str) -> None:
    """torch.save of a dict of plain data (tensors, dicts, lists, tuples, numbers, strings, None;
    dataclasses become tagged dicts), written to `path`.tmp and then renamed over `path`, so that
    a crash never leaves a half-written file (os.replace is atomic on POSIX and Windows).

    A write that fails (a full disk, a read-only folder) removes the temporary file, leaves `path`
    as it was and raises OSError saying so (cli.run prints it as one line). The file is opened
    here rather than by torch.save, whose own writer reports these errors as RuntimeErrors
    without the reason."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(_to_plain(obj), f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.islink(tmp) or os.path.isfile(tmp):  # never a directory that happens to have its name
            os.remove(tmp)
        if isinstance(e, OSError):
            raise OSError(f"cannot write {path} ({e.strerror or e}): free some disk space or write somewhere "
                          f"else; {path} was left as it was") from None
        raise


def check_state_fits(state: dict[str, Tensor], module: torch.nn.Module, where: str, hint: str) -> None:
    """ValueError naming the first tensor of `state` whose shape differs from `module`'s (or that
    one of them lacks), so that load_state_dict cannot fail with torch's many-line RuntimeError;
    `where` names the file, `hint` says what to do."""
    own = module.state_dict()
    shape = lambda d, name: f"shape {tuple(d[name].shape)}" if name in d else "no such tensor"  # noqa: E731
    for name in sorted(set(own) | set(state)):
        if shape(state, name) != shape(own, name):
            raise ValueError(f"{where}: tensor {name!r}: {shape(state, name)} there, {shape(own, name)} in the "
                             f"model now; {hint}")


def load_pt(path: str, what: str, kinds: tuple[type, ...] = ()) -> dict:
    """A dict written by save_pt, loaded with torch.load(weights_only=True), so that loading never
    runs code; the dataclasses among `kinds` are rebuilt from their tagged dicts. Tensors land on
    the CPU (load_state_dict copies them to the model's device).

    `what` names the file in messages (e.g. "--base checkpoint"). Raises ValueError, naming the file
    and what to do, for a missing path, a directory, an empty, truncated or foreign file, a file
    holding Python objects other than plain data (refused: unpickling them could run code), or
    one that is not a dict.
    """
    if not os.path.exists(path):
        raise ValueError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a directory; give the .pt file")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's safe unpickler met something it does not allow
        if "global" in str(e).lower():  # a reference to a Python callable or class: what code execution needs
            raise ValueError(f"{what} {path} holds Python objects other than tensors and plain data; loading it "
                             "could run code, so it is refused (only files written by this project's sft.py and "
                             "rlvr.py load)") from None
        raise ValueError(f"{what} {path} is not a checkpoint written by this project: not plain data saved by "
                         "torch.save (anything else is refused, since unpickling it could run code)") from None
    except Exception as e:  # noqa: BLE001 (torch raises EOFError, RuntimeError, KeyError, ... for a broken file)
        raise ValueError(f"{what} {path} is not a readable checkpoint (empty, truncated or another format: "
                         f"{type(e).__name__}); give another file or write this one again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} holds a {type(obj).__name__}, not a checkpoint of this project")
    return _from_plain(obj, {k.__name__: k for k in kinds}, f"{what} {path}")


def main() -> None:
    from tools.cli import ArgumentParser, check_int  # the command line's helpers; the loaders above need none
    from pretrained.tokenizer import BPETokenizer  # only the command line turns ids into text
    ap = ArgumentParser(description="Load a local Llama/Qwen2/Qwen3 checkpoint, print its config and a greedy "
                        "continuation: token ids, and the text too when the directory has a tokenizer.json.")
    ap.add_argument("directory")
    prompt = ap.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="prompt text, encoded with the checkpoint's tokenizer.json")
    prompt.add_argument("--ids", help="comma-separated prompt token ids (default without --prompt: 1,2,3)")
    ap.add_argument("--tokens", type=int, default=8, help="tokens to generate (greedy)")
    args = ap.parse_args()
    check_int("--tokens", args.tokens, 0)
    try:
        ids = [int(i) for i in (args.ids or "1,2,3").split(",")]
    except ValueError:
        raise ValueError(f"--ids {args.ids!r}: give comma-separated token ids such as 1,2,3") from None
    if not os.path.isdir(args.directory):
        raise ValueError(f"{args.directory}: no such directory; give a Llama/Qwen2 checkpoint directory")
    if not os.path.isfile(os.path.join(args.directory, "config.json")):
        raise ValueError(f"{args.directory}: no config.json there; give a Llama/Qwen2 checkpoint directory "
                         "(config.json and *.safetensors)")
    tok_path = os.path.join(args.directory, "tokenizer.json")
    tok = BPETokenizer.from_file(tok_path) if os.path.isfile(tok_path) else None
    if args.prompt is not None:
        if tok is None:
            raise ValueError(f"--prompt needs {tok_path}, which is not there; give token ids with --ids instead")
        ids = tok.encode(args.prompt, add_special_tokens=True)  # `tokenizers`' default: Llama 3 gets its BOS
        if not ids:
            raise ValueError("--prompt '': give some text to continue")
    model = load_pretrained(args.directory)
    if any(not 0 <= i < model.cfg.vocab_size for i in ids):
        raise ValueError(f"--ids {args.ids}: token ids must lie in [0, {model.cfg.vocab_size})")
    print(model.cfg, f"\n{model.num_params() / 1e6:.1f}M parameters")
    n_prompt = len(ids)
    with torch.no_grad():
        for _ in range(args.tokens):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    print("greedy:", ids[:n_prompt], "->", ids[n_prompt:])
    if tok is not None:  # the same ids as text, special tokens shown
        # a model's vocab_size is often padded beyond its tokenizer (Qwen2.5: 151936 rows, 151665 tokens)
        unknown = sorted({i for i in ids if i not in tok.id_to_token})
        text = lambda part: tok.decode([i for i in part if i in tok.id_to_token])  # noqa: E731
        print(f"text: {text(ids[:n_prompt])!r} -> {text(ids[n_prompt:])!r}"
              + (f" (ids without a token in tokenizer.json left out: {unknown})" if unknown else ""))
    else:
        print(f"(no {tok_path}: token ids only)")


if __name__ == "__main__":
    from tools.cli import run
    run(main)
