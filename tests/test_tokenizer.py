"""Tokenizers: the word tokenizer's known answers, and the byte-level BPE against `tokenizers`
(a test-only oracle; skipped without it) on BPEs trained and saved as tokenizer.json here, one per
kind of file real checkpoints have (Qwen2/Qwen3, Llama 3 with its BOS post-processor, GPT-2,
SmolLM2's digits), plus the fields that change ids: normalizers (including the empty Sequence), added
tokens matched before or after normalisation, ByteLevel's add_prefix_space, decoding of tokens
outside the byte table; every field we do not implement is refused by name."""

import json
import random

import pytest

from pretrained.tokenizer import BPETokenizer, byte_to_unicode, translate_regex
from tasks.common import WordTokenizer

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"\p{N}|", r"\p{N}{1,3}|")  # Llama 3 groups up to three digits
CORPUS = ["The quick brown fox jumps over the lazy dog. It's 12:45, isn't it?",
          "Naïve café owners in Zürich said: 'we'll see'. Prices rose 3.5% to $1,234.56!",
          "def f(x):\n    return x ** 2  # squares\n\n\tTabs\tand  double  spaces",
          "日本語のテキストと中文文本，还有한국어 텍스트。Ελληνικά και русский текст.",
          "Numbers: 0123456789 ٠١٢٣ ½ ² Ⅻ; emoji 🙂🚀 and combining e\u0301 vs é.",
          "<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n<|im_start|>assistant\n56<|im_end|>",
          "fields \x1cone \x1ctwo \x1dthree \x1cfour"] * 20  # \x1c: whitespace to Python's re, not to the reference's
TEXTS = ["Hello world", "  leading and trailing spaces   ", "I'm sure they'd've LIKED it; 'S 'T", "x\r\ny\n\n\nz",
         "3.14159 and 2,718 and 1e-10", "混合 text with 数字 123 and emoji 🙂", "ÀÉÎÕÜ àéîõü", "e\u0301 é",
         "<|im_start|>system\nYou are helpful.<|im_end|>\n", "special<|im_end|>glued<|endoftext|>", "", " ", "\t\t\n ",
         "Ⅻ ½ ² ٣ — em dash… ellipsis", "tokens never seen: ঋ ঌ ⵣ 𝔘𝔫𝔦", "aaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbb",
         "What is 7 * 8? #### 56"]


def test_word_tokenizer_known_answers():
    tok = WordTokenizer(["a", "b", "=", "<eos>"])
    assert tok.encode("a b = b <eos>") == [0, 1, 2, 1, 3] and tok.decode([0, 2, 3]) == "a = <eos>"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("a c")
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "a", "<eos>"])


def test_byte_table_is_a_bijection_onto_printable_symbols():
    table = byte_to_unicode()
    assert len(set(table.values())) == 256
    assert all(not c.isspace() and c.isprintable() for c in table.values())
    assert table[ord("A")] == "A" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"


def test_translated_regex_on_known_splits():
    import re
    split = re.compile(translate_regex(QWEN2_SPLIT))
    assert split.findall("Hello world's 123") == ["Hello", " world", "'s", " ", "1", "2", "3"]
    assert split.findall("über ½") == ["über", " ", "½"]  # ü is a letter, ½ a number (No), not a letter


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
EXTRA_TEXTS = ["sep\x1carators\x1d and\x85next\u00a0line \u2028 x", "more fields \x1cone \x1dthree",
               "<think>\nreasoning</think>\n\n#### 5<|im_end|>", "e\u0301x and éx", "ĠĠ two symbols  ",
               "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"]


def _train(tmp_path, kind: str):
    """A BPE trained by `tokenizers` on CORPUS and saved as tokenizer.json, laid out like a kind of
    real checkpoint. Returns (the reference tokenizer read back from the file, its path).

    qwen2:  NFC + Split(regex) + ByteLevel(use_regex=False), ByteLevel post-processor (Qwen2.5, Qwen3);
    llama3: no normalizer, Split(Llama 3 regex), ignore_merges, <|begin_of_text|> added by TemplateProcessing;
    gpt2:   ByteLevel with its own regex (GPT-2);
    smollm2: Digits(individual_digits) + ByteLevel with its regex (SmolLM2);
    empty:  gpt2 with a normalizer that is an empty Sequence (must mean: no normalisation);
    prefix: NFKD in a Sequence, Split(digits) + ByteLevel(add_prefix_space=True).
    Non-special added tokens as Qwen3 has them: <think> and </think> (matched in the raw text), and
    two more to exercise normalized matching and decoding: "e\u0301x" (normalized) and "ĠĠ".
    """
    tk = pytest.importorskip("tokenizers")
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = tk.Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                                                     byte_level])
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    elif kind == "llama3":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                     byte_level])
    elif kind == "prefix":
        tok.normalizer = normalizers.Sequence([normalizers.NFKD()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False)])
    elif kind == "smollm2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:  # gpt2, empty
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if kind == "empty":
            tok.normalizer = normalizers.Sequence([])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens([AddedToken("<think>", normalized=False), AddedToken("</think>", normalized=False),
                    AddedToken("e\u0301x", normalized=True), AddedToken("ĠĠ", normalized=False)])
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
    path = tmp_path / f"{kind}.json"
    tok.save(str(path))
    if kind == "llama3":
        spec = json.loads(path.read_text())
        spec["model"]["ignore_merges"] = True
        path.write_text(json.dumps(spec))
    return tk.Tokenizer.from_file(str(path)), path


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "gpt2", "smollm2", "empty", "prefix"])
def test_bpe_matches_tokenizers(tmp_path, kind):
    ref, path = _train(tmp_path, kind)
    ours = BPETokenizer.from_file(str(path))
    for text in TEXTS + EXTRA_TEXTS + CORPUS[:6]:
        expected = ref.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == expected, text
        assert ours.encode(text, add_special_tokens=True) == ref.encode(text).ids, text  # the post-processor
        assert ours.decode(expected) == ref.decode(expected, skip_special_tokens=False), text
        assert ours.decode(expected, skip_special=True) == ref.decode(expected, skip_special_tokens=True), text
        if kind in ("gpt2", "smollm2", "empty", "llama3") and "ĠĠ" not in text:  # no normaliser: lossless (but the
            # added token "ĠĠ" decodes through the byte table to two spaces, in the reference too)
            assert ours.decode(ours.encode(text)) == text
    assert ours.decode(ours.encode("<|im_end|>hi"), skip_special=True) == ("hi" if kind != "prefix" else " hi")
    if kind == "llama3":
        assert ours.encode("hi", add_special_tokens=True)[0] == ref.token_to_id("<|begin_of_text|>")
    # any id sequence decodes alike, also when it cuts a character's bytes (U+FFFD)
    g = random.Random(0)
    for _ in range(200):
        ids = [g.randrange(ours.vocab_size) for _ in range(g.randint(1, 8))]
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False), ids


def test_empty_normalizer_sequence_means_no_normalisation(tmp_path):
    """Regression: an empty Sequence was taken for NFC, so a decomposed é became one token and did
    not decode back to the input; the reference keeps it (e + the combining accent, lossless)."""
    ref, path = _train(tmp_path, "empty")
    ours = BPETokenizer.from_file(str(path))
    text = "cafe\u0301"
    assert ours.encode(text) == ref.encode(text).ids and ours.decode(ours.encode(text)) == text
    assert ours.encode(text) != ours.encode("café")


def test_bpe_refuses_what_it_cannot_do(tmp_path):
    _, path = _train(tmp_path, "qwen2")
    spec = json.loads(path.read_text())
    bad = [({"model": {**spec["model"], "type": "Unigram"}}, "only byte-level BPE"),
           ({"normalizer": {"type": "Lowercase"}}, "normalizer 'Lowercase'"),
           ({"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip"}]}},
            "normalizer 'Strip'"),
           ({"pre_tokenizer": {"type": "Whitespace"}}, "pre_tokenizer 'Whitespace'"),
           ({"pre_tokenizer": None}, "needs a ByteLevel pre-tokenizer"),
           ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": r"\d"}, "behavior": "Removed", "invert": False},
               {"type": "ByteLevel"}]}}, "Split behavior"),
           ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [  # DeepSeek-style Unicode classes
               {"type": "Split", "pattern": {"Regex": r"\p{Lu}+"}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel"}]}}, "Split pattern"),
           ({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "ByteLevel"}, {"type": "Digits"}]}}, "after ByteLevel"),
           ({"post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]}},
            "post_processor 'BertProcessing'"),
           ({"decoder": {"type": "WordPiece"}}, "decoder 'WordPiece'"),
           ({"decoder": None}, "decoder None"),
           ({"model": {**spec["model"], "dropout": 0.1}}, "model.dropout"),
           ({"model": {**spec["model"], "continuing_subword_prefix": "##"}}, "model.continuing_subword_prefix"),
           ({"model": {**spec["model"], "byte_fallback": True}}, "model.byte_fallback"),
           ({"added_tokens": spec["added_tokens"] + [{"id": 999, "content": "<x>", "lstrip": True}]}, "lstrip"),
           ({"truncation": {"max_length": 8}}, "truncation"),
           ({"padding": {"pad_id": 0}}, "padding")]
    for change, match in bad:
        with pytest.raises(ValueError, match=match):
            BPETokenizer({**spec, **change})
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPETokenizer(spec).decode([10**6])
