r"""
Tokenizers.

`WordTokenizer`: a fixed vocabulary of whitespace-separated words, for the synthetic tasks
(every node label, operator and special symbol is one token). Built from the task's word list,
so the ids are deterministic.

`BPETokenizer`: the byte-level BPE of pretrained Llama-3 / Qwen2 models, read from their
`tokenizer.json` (no Hugging Face library), built up in small steps:
  1. special (added) tokens are cut out of the text first and kept whole;
  2. the rest is normalised (NFC, when the file asks for it) and split into pieces by the
     pre-tokenizer's regex (words, numbers, punctuation runs, whitespace);
  3. each piece's UTF-8 bytes are written as printable characters (`byte_to_unicode`, GPT-2's
     table), so that every byte sequence is a string of known symbols;
  4. BPE: starting from single bytes, repeatedly merge the adjacent pair with the best (lowest)
     merge rank until no listed pair is left; each resulting symbol is a vocabulary entry.
Decoding maps ids back to symbols, symbols back to bytes, bytes to text.

The split regexes use `\p{L}` (letters) and `\p{N}` (numbers), which Python's `re` lacks.
Rather than add the `regex` package, `translate_regex` replaces them by explicit character
classes built from `unicodedata` categories (L*, N*): exact, up to the Unicode version of this
Python (`unicodedata.unidata_version`) versus the Rust tokenizer's; characters added to Unicode
between the two versions could be split differently. `tests/test_tokenizer.py` checks the
result against `tokenizers` on text with letters and digits of many scripts.

`chatml(messages)` formats a conversation the way Qwen instruct models expect.

Run `python tokenizer.py` for a round trip on a small vocabulary, or
`python tokenizer.py path/to/tokenizer.json "some text"` to tokenize with a real file.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata


class WordTokenizer:
    """Whitespace-separated words <-> ids, over a fixed list of words."""

    def __init__(self, words: list[str], eos: str = "<eos>"):
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary has duplicate words")
        if eos not in words:
            raise ValueError(f"the vocabulary must contain the end-of-sequence word {eos!r}")
        if any(w == "" or any(c.isspace() for c in w) for w in words):
            raise ValueError("vocabulary words must be non-empty and contain no whitespace")
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(words)}
        self.eos_id = self.stoi[eos]

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[w] for w in text.split()]
        except KeyError as e:
            raise ValueError(f"word {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.itos[i] for i in ids)


# ---------------------------------------------------------------------------------------------
# byte-level BPE from tokenizer.json


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters: printable
    Latin-1 bytes stand for themselves, the others (control codes, space, ...) are shifted to
    code points 256 and up, so that no symbol is whitespace or invisible."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, shift = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + shift)
            shift += 1
    return out


@functools.cache
def unicode_class(major: str) -> str:
    """The body of a regex character class matching every code point whose Unicode category
    starts with `major` ('L': letters, 'N': numbers), as ranges."""
    ranges, start, prev = [], None, None
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == major:
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    esc = lambda cp: re.escape(chr(cp))  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


def translate_regex(pattern: str) -> str:
    r"""A tokenizer.json split regex for Python's `re`: `\p{L}` / `\p{N}` (also inside [...])
    become explicit classes; everything else the patterns use (`(?i:...)`, `(?!...)`, `\s`)
    means the same in `re`."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        m = re.match(r"\\p\{(L|N)\}", pattern[i:])
        if m:
            body = unicode_class(m.group(1))
            out.append(body if in_class else f"[{body}]")
            i += m.end()
            continue
        step = 2 if pattern[i] == "\\" else 1  # an escape is copied whole
        if step == 1 and pattern[i] in "[]":
            in_class = pattern[i] == "["
        out.append(pattern[i: i + step])
        i += step
    return "".join(out)


GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


class BPETokenizer:
    """Byte-level BPE with the vocabulary, merges, special tokens and pre-tokenizer of a `tokenizer.json`."""

    def __init__(self, spec: dict):
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"only byte-level BPE tokenizers are supported, this one is {model.get('type')!r}")
        self.vocab: dict[str, int] = dict(model["vocab"])
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.ignore_merges = bool(model.get("ignore_merges", False))  # Llama 3: a whole piece in the vocab wins
        self.added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
        self.id_to_token = {i: t for t, i in self.vocab.items()} | {i: t for t, i in self.added.items()}
        self.special_ids = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        self.nfc = self._wants_nfc(spec.get("normalizer"))
        self.split, self.add_prefix_space = self._pre_tokenizer(spec.get("pre_tokenizer"))
        # longest first, so that a special token containing another is cut out whole
        self.added_re = (re.compile("|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True)))
                         if self.added else None)
        self.b2u = byte_to_unicode()
        self.u2b = {u: b for b, u in self.b2u.items()}
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str) -> "BPETokenizer":
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    @staticmethod
    def _wants_nfc(norm: dict | None) -> bool:
        if not norm:
            return False
        parts = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
        kinds = {p.get("type") for p in parts}
        if kinds - {"NFC"}:
            raise ValueError(f"normalizers {sorted(kinds - {'NFC'})} are not supported (only NFC)")
        return True

    @staticmethod
    def _pre_tokenizer(pre: dict | None) -> tuple[re.Pattern, bool]:
        """The split regex and add_prefix_space of a ByteLevel (optionally Split + ByteLevel) pre-tokenizer."""
        parts = (pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]) if pre else []
        split, prefix = None, False
        for p in parts:
            if p.get("type") == "Split":
                if p.get("behavior") != "Isolated" or p.get("invert"):
                    raise ValueError("only Split pre-tokenizers with behavior 'Isolated' are supported")
                split = p["pattern"].get("Regex") or re.escape(p["pattern"]["String"])
            elif p.get("type") == "ByteLevel":
                prefix = bool(p.get("add_prefix_space", False))
                if p.get("use_regex", True):
                    split = split or GPT2_SPLIT
            else:
                raise ValueError(f"pre-tokenizer {p.get('type')!r} is not supported (Split and ByteLevel are)")
        return re.compile(translate_regex(split or GPT2_SPLIT)), prefix

    @property
    def vocab_size(self) -> int:
        return max(self.id_to_token) + 1

    def token_id(self, token: str) -> int:
        if token in self.added:
            return self.added[token]
        if token not in self.vocab:
            raise ValueError(f"{token!r} is not a token of this vocabulary")
        return self.vocab[token]

    def _bpe(self, piece: str) -> list[int]:
        """Step 4 for one pre-tokenized piece (already mapped to byte symbols)."""
        if piece in self.cache:
            return self.cache[piece]
        if self.ignore_merges and piece in self.vocab:
            return [self.vocab[piece]]
        symbols = list(piece)
        while len(symbols) > 1:
            best, first = min((self.ranks.get(p, float("inf")), i) for i, p in enumerate(zip(symbols, symbols[1:])))
            if best == float("inf"):
                break
            pair, merged, i = (symbols[first], symbols[first + 1]), [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        try:
            ids = [self.vocab[s] for s in symbols]
        except KeyError as e:
            raise ValueError(f"symbol {e.args[0]!r} is not in the vocabulary (an incomplete tokenizer.json?)") from None
        self.cache[piece] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        if self.add_prefix_space and text and not text.startswith(" "):
            text = " " + text
        ids = []
        for piece in self.split.findall(text):
            ids += self._bpe("".join(self.b2u[b] for b in piece.encode("utf-8")))
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; added/special tokens that appear literally are kept whole."""
        if self.added_re is None:
            return self._encode_ordinary(text)
        ids, pos = [], 0
        for m in self.added_re.finditer(text):
            ids += self._encode_ordinary(text[pos: m.start()]) + [self.added[m.group()]]
            pos = m.end()
        return ids + self._encode_ordinary(text[pos:])

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        out, buf = [], bytearray()
        for i in ids:
            tok = self.id_to_token.get(int(i))
            if tok is None:
                raise ValueError(f"id {i} is not in the vocabulary")
            if self.added.get(tok) == int(i):  # an added token: its text as is, not byte symbols
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not (skip_special and int(i) in self.special_ids):
                    out.append(tok)
            else:
                buf += bytes(self.u2b[c] for c in tok)
        return "".join(out) + buf.decode("utf-8", errors="replace")


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    r"""A conversation in the ChatML format of Qwen instruct models:
    `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n`."""
    for m in messages:
        if set(m) != {"role", "content"} or m["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"a message needs exactly 'role' (system/user/assistant) and 'content': {m!r}")
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def main() -> None:
    if len(sys.argv) == 3:
        tok = BPETokenizer.from_file(sys.argv[1])
        ids = tok.encode(sys.argv[2])
        print(ids, "->", [tok.id_to_token[i] for i in ids], "->", repr(tok.decode(ids)))
        return
    tok = WordTokenizer(["a", "b", "=", "<eos>"])
    ids = tok.encode("a b = b <eos>")
    print(ids, "->", tok.decode(ids))


if __name__ == "__main__":
    main()
