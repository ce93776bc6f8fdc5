"""Tokenizers: the word tokenizer's known answers, and the byte-level BPE against `tokenizers`
(a test-only oracle; skipped without it) on a BPE trained and saved as tokenizer.json here."""

import json

import pytest

from tokenizer import BPETokenizer, WordTokenizer, byte_to_unicode, chatml, translate_regex

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
CORPUS = ["The quick brown fox jumps over the lazy dog. It's 12:45, isn't it?",
          "Naïve café owners in Zürich said: 'we'll see'. Prices rose 3.5% to $1,234.56!",
          "def f(x):\n    return x ** 2  # squares\n\n\tTabs\tand  double  spaces",
          "日本語のテキストと中文文本，还有한국어 텍스트。Ελληνικά και русский текст.",
          "Numbers: 0123456789 ٠١٢٣ ½ ² Ⅻ; emoji 🙂🚀 and combining e\u0301 vs é.",
          "<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n<|im_start|>assistant\n56<|im_end|>"] * 20
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


def test_chatml():
    text = chatml([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="role"):
        chatml([{"role": "robot", "content": "x"}])


def _train(tmp_path, kind: str):
    tk = pytest.importorskip("tokenizers")
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
    tok = tk.Tokenizer(models.BPE())
    if kind == "qwen2":  # NFC + Split(regex) + ByteLevel(use_regex=False), as Qwen2's tokenizer.json
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:  # GPT-2 style: ByteLevel with its built-in regex
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    path = tmp_path / f"{kind}.json"
    tok.save(str(path))
    return tok, path


@pytest.mark.parametrize("kind", ["qwen2", "gpt2"])
def test_bpe_matches_tokenizers(tmp_path, kind):
    ref, path = _train(tmp_path, kind)
    ours = BPETokenizer.from_file(str(path))
    for text in TEXTS + CORPUS[:6]:
        expected = ref.encode(text).ids
        assert ours.encode(text) == expected, text
        assert ours.decode(expected) == ref.decode(expected, skip_special_tokens=False), text
        if kind == "gpt2" or text == __import__("unicodedata").normalize("NFC", text):
            assert ours.decode(ours.encode(text)) == text  # lossless (NFC changes non-NFC input by design)
    assert ours.decode(ours.encode("<|im_end|>hi"), skip_special=True) == "hi"


def test_bpe_refuses_what_it_cannot_do(tmp_path):
    _, path = _train(tmp_path, "qwen2")
    spec = json.loads(path.read_text())
    with pytest.raises(ValueError, match="only byte-level BPE"):
        BPETokenizer({**spec, "model": {**spec["model"], "type": "Unigram"}})
    with pytest.raises(ValueError, match="normalizers"):
        BPETokenizer({**spec, "normalizer": {"type": "Lowercase"}})
    with pytest.raises(ValueError, match="pre-tokenizer"):
        BPETokenizer({**spec, "pre_tokenizer": {"type": "Whitespace"}})
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPETokenizer(spec).decode([10**6])
