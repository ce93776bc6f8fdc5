"""Checkpoints: our safetensors reader/writer, malformed files (the format's rules one by one, and
a fuzz test), and Llama / Llama 3 (RoPE scaling) / Qwen2 / Qwen3 checkpoints written by
`transformers` (a test-only oracle; skipped without it) giving the same logits and greedy
continuation in our model; config fields we do not implement are refused by name; stop ids."""

import json
import os
import random
import struct

import pytest
import torch

from pretrained.checkpoint import config_from_hf, load_pretrained, read_safetensors, stop_ids, write_safetensors


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(5, generator=g).half(),
            "c": torch.randn(2, 2, 2, generator=g).bfloat16(), "d.ids": torch.arange(6, dtype=torch.int64).view(2, 3),
            "e.empty": torch.zeros(0, 4)}


def test_round_trip(tmp_path):
    path = str(tmp_path / "x.safetensors")
    tensors = sample_tensors()
    write_safetensors(tensors, path, metadata={"format": "pt"})
    back = read_safetensors(path)
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t)
    assert list(read_safetensors(path, ["c"])) == ["c"]
    with pytest.raises(ValueError, match="no tensor named"):
        read_safetensors(path, ["zzz"])


def test_reads_files_written_by_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    path = str(tmp_path / "lib.safetensors")
    tensors = sample_tensors()
    st.save_file(tensors, path)
    back = read_safetensors(path)
    assert all(torch.equal(back[k], t) for k, t in tensors.items())
    ours = str(tmp_path / "ours.safetensors")  # and the library reads ours
    write_safetensors(tensors, ours)
    assert all(torch.equal(st.load_file(ours)[k], t) for k, t in tensors.items())


def _split(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8: 8 + n]), raw[8 + n:]


def _join(path, header, data, n=None):
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if n is None else n) + text + data)


@pytest.mark.parametrize("mutation,match", [
    (lambda h, d: (h, d, 10**9), "does not fit"),
    (lambda h, d: (h, d, 3), "not valid JSON"),
    (lambda h, d: ({**h, "a.weight": {**h["a.weight"], "dtype": "F128"}}, d, None), "unknown dtype"),
    (lambda h, d: ({**h, "a.weight": {**h["a.weight"], "shape": [3, 5]}}, d, None), "needs 60 bytes"),
    (lambda h, d: ({**h, "a.weight": {**h["a.weight"], "shape": [3, -4]}}, d, None), "non-negative"),
    (lambda h, d: ({**h, "a.weight": {**h["a.weight"], "data_offsets": [0, 10**6]}}, d, None), "out of bounds"),
    (lambda h, d: ({**h, "b.bias": {**h["b.bias"], "data_offsets": [h["a.weight"]["data_offsets"][0],
                                                                     h["a.weight"]["data_offsets"][0] + 10]}}, d, None),
     "overlap"),
    (lambda h, d: (h, d[:-3], None), "out of bounds"),
    (lambda h, d: ({**h, "a.weight": {"dtype": "F32", "shape": [3, 4]}}, d, None), "exactly the fields"),
    (lambda h, d: ([1, 2], d, None), "JSON object"),
    # the format's layout rules: the data buffer is covered exactly, no gap, no trailing bytes
    (lambda h, d: (h, d + b"\0" * 8, None), "8 trailing bytes"),
    (lambda h, d: ({k: v for k, v in h.items() if k != "a.weight"}, d, None), "gap of 48 bytes"),
    (lambda h, d: ({**h, "__metadata__": {"format": 1}}, d, None), "strings to strings"),
    (lambda h, d: ({**h, "__metadata__": ["pt"]}, d, None), "strings to strings"),
])
def test_malformed_files_raise_clear_errors(tmp_path, mutation, match):
    path = str(tmp_path / "m.safetensors")
    write_safetensors(sample_tensors(), path)
    header, data = _split(path)
    _join(path, *mutation(header, data))
    with pytest.raises(ValueError, match=match) as err:
        read_safetensors(path)
    assert "m.safetensors" in str(err.value)


def test_duplicate_names_and_reserved_names_are_refused(tmp_path):
    """A header naming a tensor twice is ambiguous (json.loads would keep the last silently); the
    writer cannot store a tensor named like the metadata key, nor non-string metadata."""
    path = str(tmp_path / "d.safetensors")
    write_safetensors({"a": torch.ones(2), "b": torch.zeros(2)}, path)
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    text = raw[8: 8 + n].decode().rstrip()
    header = json.loads(text)
    b = json.dumps(header["b"])
    dup = text[:-1] + f',"a":{b}}}'  # "a" a second time, pointing at b's bytes
    open(path, "wb").write(struct.pack("<Q", len(dup)) + dup.encode() + raw[8 + n:])
    with pytest.raises(ValueError, match="'a' appears twice"):
        read_safetensors(path)
    with pytest.raises(ValueError, match="__metadata__"):
        write_safetensors({"__metadata__": torch.ones(1)}, path)
    with pytest.raises(ValueError, match="strings to strings"):
        write_safetensors({"a": torch.ones(1)}, path, metadata={"step": 3})
    write_safetensors({"a": torch.ones(1)}, path, metadata={"step": "3"})
    assert list(read_safetensors(path)) == ["a"]


def test_fuzz_header_bytes(tmp_path):
    """Random byte edits in the header: either a clean ValueError, or a load that returns exactly
    the original data (an edit inside a name or in whitespace); never a crash or wrong data."""
    path = str(tmp_path / "f.safetensors")
    tensors = sample_tensors()
    write_safetensors(tensors, path)
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    by_size = sorted(tensors.values(), key=lambda t: (str(t.dtype), tuple(t.shape)))
    rng = random.Random(0)
    outcomes = {"error": 0, "same": 0}
    for _ in range(400):
        buf = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(0, 8 + n)  # the length field or the JSON
            buf[i] = rng.choice([rng.randrange(256), ord(rng.choice('0123456789",:[]{}FIU'))])
        open(path, "wb").write(bytes(buf))
        try:
            back = read_safetensors(path)
        except ValueError:
            outcomes["error"] += 1
            continue
        got = sorted(back.values(), key=lambda t: (str(t.dtype), tuple(t.shape)))
        assert len(got) == len(by_size) and all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(got, by_size))
        outcomes["same"] += 1
    assert outcomes["error"] > 100


# ---------------------------------------------------------------------------------------------
# parity with transformers (test-only oracle)


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 256}


def _hf_model(kind: str, tie: bool):
    """A tiny random checkpoint of a family. qwen3: head_dim 12 != hidden 32 / 4 heads, GQA 4/2;
    llama3: RoPE scaling with an original context of 256 and head_dim 16, so that its 8
    frequencies fall in all three bands (kept: wavelength < 64, blended: 64..256, stretched)."""
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=tie)
    if kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, rope_theta=5000.0))
    elif kind == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=12, rope_theta=5000.0))
    elif kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, rope_theta=5000.0))
    else:  # llama3
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **{**common, "hidden_size": 64, "intermediate_size": 96}, rope_parameters=dict(LLAMA3_ROPE)))
    torch.manual_seed(0)
    with torch.no_grad():  # HF's init is small (std 0.02); make every weight, bias and norm matter
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _to_old_rope_layout(directory) -> None:
    """Rewrite config.json the way Llama 3.1/3.2 files on the Hub have it: `rope_theta` at the top
    and the scaling in `rope_scaling`."""
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    path.write_text(json.dumps(cfg | {"rope_theta": rope.pop("rope_theta"), "rope_scaling": rope}))


@pytest.mark.parametrize("kind,tie,shard", [("qwen2", False, False), ("qwen2", True, True), ("llama", False, True),
                                            ("llama", True, False), ("qwen3", False, False), ("qwen3", True, True),
                                            ("llama3", True, False), ("llama3-old-layout", False, True)])
def test_transformers_checkpoint_gives_the_same_logits(tmp_path, kind, tie, shard):
    """Logits of a batch (fp32, atol 1e-4) and a greedy continuation through our KV-cached
    decoder; llama3 at positions up to 300, beyond its original context of 256."""
    transformers = pytest.importorskip("transformers")
    hf = _hf_model(kind.removesuffix("-old-layout"), tie)
    hf.save_pretrained(str(tmp_path), max_shard_size="20KB" if shard else "1GB")
    if shard:
        assert os.path.exists(tmp_path / "model.safetensors.index.json")
    if kind.endswith("old-layout"):
        _to_old_rope_layout(tmp_path)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()  # as transformers reads it
        assert hf.config.rope_parameters["rope_type"] == "llama3"
    ours = load_pretrained(str(tmp_path))
    assert ours.cfg.qkv_bias == (kind == "qwen2") and ours.cfg.tie_embeddings == tie
    assert ours.cfg.qk_norm == (kind == "qwen3") and ours.cfg.head_dim == {"qwen3": 12, "llama3": 16}.get(kind[:6], 8)
    assert ours.cfg.rope_type == ("llama3" if kind.startswith("llama3") else "default")
    T = 300 if kind.startswith("llama3") else 17
    ids = torch.randint(0, 50, (3, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours(ids)[0]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    # a greedy continuation through our KV-cached decoder: each token is the argmax of transformers'
    # logits for the sequence so far (up to rounding: two implementations may break a near-tie apart)
    from decode import CotConfig, decode_cot
    prompt = ids[0, : T - 12].tolist()
    traj = decode_cot(ours, [prompt], CotConfig(greedy=True, max_new_tokens=12), stop_ids=(), generator=torch.Generator())
    done = traj.completion[0].tolist()
    assert len(done) == 12
    with torch.no_grad():
        hf_logits = hf(torch.tensor([prompt + done])).logits[0, len(prompt) - 1: -1]  # (12, V)
    chosen = hf_logits.gather(1, torch.tensor(done)[:, None]).squeeze(1)
    assert (chosen >= hf_logits.max(1).values - 1e-4).all()


def test_llama3_scaling_changes_only_the_long_wavelengths():
    """The three bands of Llama 3.1's RoPE scaling, by hand: kept, blended, divided by the factor."""
    from model import ModelConfig, rope_frequencies
    plain = ModelConfig(n_embd=64, n_head=4, n_kv_head=2)  # head_dim 16: ω_i = 10000^(-i/8), i = 0..7
    scaled = ModelConfig(n_embd=64, n_head=4, n_kv_head=2, rope_type="llama3", rope_factor=8.0,
                         rope_original_max_len=256)
    w, ws = rope_frequencies(plain, "cpu"), rope_frequencies(scaled, "cpu")
    wavelen = 2 * torch.pi / w
    keep, stretch = wavelen < 256 / 4, wavelen > 256 / 1
    assert keep.sum() == 3 and stretch.sum() == 4  # and one in between
    torch.testing.assert_close(ws[keep], w[keep], rtol=0, atol=0)
    torch.testing.assert_close(ws[stretch], w[stretch] / 8)
    mid = ~keep & ~stretch
    s = (256 / wavelen[mid] - 1) / (4 - 1)
    torch.testing.assert_close(ws[mid], (1 - s) * w[mid] / 8 + s * w[mid])


def test_loader_refuses_bad_checkpoints(tmp_path):
    hf = _hf_model("qwen2", False)
    hf.save_pretrained(str(tmp_path))
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    st = tmp_path / "model.safetensors"
    tensors = read_safetensors(str(st))
    # a missing tensor
    write_safetensors({k: v for k, v in tensors.items() if "layers.1.mlp.up_proj" not in k}, str(st))
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        load_pretrained(str(tmp_path))
    # a shape that disagrees with the config
    write_safetensors({**tensors, "model.norm.weight": torch.ones(31)}, str(st))
    with pytest.raises(ValueError, match="model.norm.weight.*shape"):
        load_pretrained(str(tmp_path))
    # an architecture we do not implement
    write_safetensors(tensors, str(st))
    cfg_path.write_text(json.dumps({**cfg, "model_type": "mistral"}))
    with pytest.raises(ValueError, match="model_type 'mistral'"):
        load_pretrained(str(tmp_path))
    cfg_path.write_text(json.dumps({**cfg, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    with pytest.raises(ValueError, match="rope_scaling.rope_type 'yarn'"):
        load_pretrained(str(tmp_path))
    cfg_path.write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}))
    with pytest.raises(ValueError, match="rope_parameters.low_freq_factor is missing"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        load_pretrained(str(tmp_path))
    old_style = {k: v for k, v in cfg.items() if k != "rope_parameters"} | {"rope_theta": 5000.0}
    cfg_path.write_text(json.dumps(old_style))  # the layout of older config.json files
    assert load_pretrained(str(tmp_path)).cfg.rope_theta == 5000.0
    cfg_path.write_text(json.dumps(cfg))
    assert load_pretrained(str(tmp_path)).cfg.n_layer == 2


QWEN3_CONFIG = {  # the fields of Qwen3-0.6B's config.json (the values of the smallest real model)
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
    "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936}
LLAMA32_ROPE = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192,
                "rope_type": "llama3"}  # Llama-3.2-1B's rope_scaling


def test_real_configs_map_to_our_config():
    cfg = config_from_hf(QWEN3_CONFIG)
    assert (cfg.head_dim, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.qk_norm, cfg.qkv_bias, cfg.rope_theta) == \
        (128, 1024, 16, 8, True, False, 1e6)
    llama = {**QWEN3_CONFIG, "model_type": "llama", "head_dim": 64, "hidden_size": 2048, "num_attention_heads": 32,
             "mlp_bias": False, "pretraining_tp": 1, "rope_theta": 500000.0, "rope_scaling": LLAMA32_ROPE,
             "eos_token_id": [128001, 128008, 128009]}
    cfg = config_from_hf(llama)
    assert (cfg.rope_type, cfg.rope_factor, cfg.rope_original_max_len, cfg.rope_theta, cfg.qk_norm) == \
        ("llama3", 32.0, 8192, 5e5, False)
    no_original = {k: v for k, v in LLAMA32_ROPE.items() if k != "original_max_position_embeddings"}
    assert config_from_hf({**llama, "rope_scaling": no_original}).rope_original_max_len == 40960  # transformers' default
    new_layout = {k: v for k, v in llama.items() if k not in ("rope_scaling", "rope_theta")}
    cfg2 = config_from_hf({**new_layout, "rope_parameters": {**LLAMA32_ROPE, "rope_theta": 500000.0}})
    assert cfg2 == cfg
    assert config_from_hf({**QWEN3_CONFIG, "rope_scaling": {"type": "default"}}).rope_type == "default"


@pytest.mark.parametrize("change,field", [
    ({"model_type": "gemma"}, "model_type 'gemma'"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"attention_bias": True}, "attention_bias True"),
    ({"attention_dropout": 0.1}, "attention_dropout 0.1"),
    ({"use_sliding_window": True}, "use_sliding_window True"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5"),
    ({"quantization_config": {"quant_method": "awq"}}, "quantization_config"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling.rope_type 'yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.rope_type 'linear'"),
    ({"rope_scaling": {**LLAMA32_ROPE, "attention_factor": 1.0}}, "rope_scaling.attention_factor"),
    ({"rope_scaling": {**LLAMA32_ROPE, "factor": "8"}}, "rope_scaling.factor must be a number"),
    ({"rope_scaling": {**LLAMA32_ROPE, "low_freq_factor": 4.0}}, "llama3 RoPE scaling needs"),
    ({"rope_scaling": None, "rope_parameters": {"full_attention": {"rope_type": "default"}}}, "per layer type"),
    ({"rope_scaling": None, "rope_parameters": {"rope_type": "default", "mrope_section": [1]}},
     "rope_parameters.mrope_section"),
    ({"head_dim": 127}, "head_dim=127 must be even"),
    ({"head_dim": "128"}, "head_dim must be an integer"),
    ({"hidden_size": None}, "hidden_size must be an integer"),
    ({"num_key_value_heads": "8"}, "num_key_value_heads must be an integer"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps must be finite"),
])
def test_config_fields_we_do_not_implement_are_refused_by_name(change, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        config_from_hf({**QWEN3_CONFIG, **change})
    with pytest.raises(ValueError, match="vocab_size is missing"):
        config_from_hf({k: v for k, v in QWEN3_CONFIG.items() if k != "vocab_size"})


def _write_tokenizer_files(directory, eos_token) -> None:
    spec = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []},
            "added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": True},
                             {"id": 6, "content": "<|im_end|>", "special": True}]}
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos_token}))


def test_stop_ids(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 8, "eos_token_id": 5}))
    assert stop_ids(str(tmp_path)) == {5}  # config.json's, no generation_config.json
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [6, 5]}))
    assert stop_ids(str(tmp_path)) == {5, 6}  # a list (Qwen2.5/Qwen3 instruct)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    _write_tokenizer_files(tmp_path, {"content": "<|im_end|>", "special": True})
    assert stop_ids(str(tmp_path)) == {5, 6}  # plus the tokenizer's EOS (an AddedToken dict)
    _write_tokenizer_files(tmp_path, "a")
    assert stop_ids(str(tmp_path)) == {0, 5}  # an EOS from the vocabulary
    _write_tokenizer_files(tmp_path, "<|nope|>")
    with pytest.raises(ValueError, match="eos_token '<|nope|>' is not a token"):
        stop_ids(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    for bad, match in [([5, "6"], "eos_token_id must be"), (True, "eos_token_id must be"), (9, "not below the model's")]:
        (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": bad}))
        with pytest.raises(ValueError, match=match):
            stop_ids(str(tmp_path))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": None}))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 8}))
    with pytest.raises(ValueError, match="no stop token"):
        stop_ids(str(tmp_path))


def test_stop_ids_of_a_checkpoint_saved_by_transformers(tmp_path):
    """generation_config.json as transformers writes it, with a list of EOS ids."""
    transformers = pytest.importorskip("transformers")
    hf = _hf_model("qwen3", True)
    hf.generation_config = transformers.GenerationConfig(eos_token_id=[3, 7], bos_token_id=1)
    hf.save_pretrained(str(tmp_path))
    assert stop_ids(str(tmp_path)) == {3, 7}


def test_rlvr_on_a_pretrained_checkpoint_and_gsm8k_file(tmp_path):
    """The user path `rlvr.py --model DIR --data FILE`: a tiny Qwen2 saved by transformers, a
    byte-level BPE tokenizer.json trained by `tokenizers`, three GSM8K-format problems."""
    import subprocess
    import sys
    from test_tokenizer import _train
    transformers = pytest.importorskip("transformers")
    tok, tok_path = _train(tmp_path, "qwen2")
    model_dir = tmp_path / "model"
    cfg = transformers.Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=512)
    model = transformers.Qwen2ForCausalLM(cfg)
    # a real checkpoint names its stop ids (here the turn end); without any, rlvr.py refuses it
    model.generation_config = transformers.GenerationConfig(eos_token_id=tok.token_to_id("<|im_end|>"))
    model.save_pretrained(str(model_dir))
    (model_dir / "tokenizer.json").write_text(tok_path.read_text())
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": f"{a}\n#### {a}"}) + "\n"
                            for q, a in [("What is 2 + 3?", "5"), ("What is 7 * 8?", "56"), ("What is 10 - 4?", "6")]))
    out = tmp_path / "run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "rlvr.py", "--model", str(model_dir), "--data", str(data), "--method", "lbr", "--widths", "2,1",
           "--sampler", "iid", "--steps", "1", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "6",
           "--eval-size", "2", "--eval-samples", "2", "--out", str(out), "--device", "cpu"]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((out / "eval.json").read_text())
    assert 0 <= result["pass@1"] <= 1 and result["fwd_per_token"] > 1
    assert (out / "metrics.jsonl").exists() and (out / "rl.pt").exists()


def test_a_bad_config_is_refused_naming_its_checkpoint(tmp_path):
    """An empty config.json said 'config.json: model_type None ...' without saying which checkpoint."""
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=f"{tmp_path}/config.json: model_type None"):
        load_pretrained(str(tmp_path))
