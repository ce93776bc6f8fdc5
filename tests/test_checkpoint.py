"""Checkpoints: our safetensors reader/writer, malformed files (a fuzz test), and Llama/Qwen2
checkpoints written by `transformers` (a test-only oracle; skipped without it) giving the same
logits and greedy continuation in our model."""

import json
import os
import random
import struct

import pytest
import torch

from checkpoint import load_pretrained, read_safetensors, write_safetensors


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
])
def test_malformed_files_raise_clear_errors(tmp_path, mutation, match):
    path = str(tmp_path / "m.safetensors")
    write_safetensors(sample_tensors(), path)
    header, data = _split(path)
    _join(path, *mutation(header, data))
    with pytest.raises(ValueError, match=match) as err:
        read_safetensors(path)
    assert "m.safetensors" in str(err.value)


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


def _hf_model(kind: str, tie: bool):
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=5000.0,
                  tie_word_embeddings=tie)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**common)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # HF's init is small (std 0.02); make every weight and bias matter
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("kind,tie,shard", [("qwen2", False, False), ("qwen2", True, True), ("llama", False, True),
                                            ("llama", True, False)])
def test_transformers_checkpoint_gives_the_same_logits(tmp_path, kind, tie, shard):
    hf = _hf_model(kind, tie)
    hf.save_pretrained(str(tmp_path), max_shard_size="20KB" if shard else "1GB")
    if shard:
        assert os.path.exists(tmp_path / "model.safetensors.index.json")
    ours = load_pretrained(str(tmp_path))
    assert ours.cfg.qkv_bias == (kind == "qwen2") and ours.cfg.tie_embeddings == tie
    ids = torch.randint(0, 50, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours(ids)[0]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    # the same greedy continuation, ours through the KV-cached decoder
    from decode import CotConfig, decode_cot
    prompt = [5, 7, 11, 2]
    with torch.no_grad():
        hf_out = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(prompt):].tolist()
    traj = decode_cot(ours, [prompt], CotConfig(greedy=True, max_new_tokens=12), eos_id=-1, generator=torch.Generator())
    assert traj.completion[0].tolist() == hf_out


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
    with pytest.raises(ValueError, match="RoPE scaling"):
        load_pretrained(str(tmp_path))
    cfg_path.write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}))
    with pytest.raises(ValueError, match="RoPE scaling"):
        load_pretrained(str(tmp_path))
    old_style = {k: v for k, v in cfg.items() if k != "rope_parameters"} | {"rope_theta": 5000.0}
    cfg_path.write_text(json.dumps(old_style))  # the layout of older config.json files
    assert load_pretrained(str(tmp_path)).cfg.rope_theta == 5000.0
    cfg_path.write_text(json.dumps(cfg))
    assert load_pretrained(str(tmp_path)).cfg.n_layer == 2


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
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(str(model_dir))
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
