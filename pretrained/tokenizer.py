r"""
Tokenizers.

`BPETokenizer`: the byte-level BPE of pretrained Llama-3 / Qwen2 / Qwen3 / SmolLM2 models, read
from their `tokenizer.json` (no Hugging Face library), built up in small steps, each the step of
the reference (`tokenizers`) of the same name:
  1. added tokens (special ones like <|im_end|>, and others) are cut out of the text first and
     kept whole: those marked `normalized: false` in the raw text, the others after step 2;
  2. normalizer: the rest is normalised (NFC, NFD, NFKC, NFKD or a Sequence of them; nothing when
     the field is null or an empty Sequence);
  3. pre-tokenizer: split into pieces by regexes (`Split`, `Digits`, then ByteLevel's own GPT-2
     regex when its `use_regex` is on; its `add_prefix_space` puts a space before each piece lacking one),
     and each piece's UTF-8 bytes are written as printable characters (`byte_to_unicode`, GPT-2's
     table), so that every byte sequence is a string of known symbols;
  4. model: BPE: starting from single bytes, repeatedly merge the adjacent pair with the best
     (lowest) merge rank until no listed pair is left; each symbol is a vocabulary entry;
  5. post-processor (only with `add_special_tokens=True`, `tokenizers`' encode default):
     `TemplateProcessing` adds its special tokens around the text (Llama 3's <|begin_of_text|>);
     `ByteLevel` changes only offsets, no ids.
Decoding (the ByteLevel decoder) maps every token's symbols back to bytes (a token with a
character outside the table, e.g. an added "<think>\n", contributes its own UTF-8 bytes), joins
the bytes and decodes them as UTF-8 (an incomplete character becomes U+FFFD).
Every other field of tokenizer.json that would change the ids (other normalizers, pre-tokenizers,
post-processors, decoders; BPE dropout, subword prefix/suffix, byte fallback; added tokens with
lstrip/rstrip/single_word; truncation, padding) is refused with an error naming it.

The split regexes use `\p{L}` (letters) and `\p{N}` (numbers), which Python's `re` lacks.
Rather than add the `regex` package, `translate_regex` replaces them by explicit character
classes built from `unicodedata` categories (L*, N*), and `\s` by Unicode's White_Space set (what
the reference's regex engine means by it; Python's `\s` also takes U+001C..U+001F): exact, up to
the Unicode version of this Python (`unicodedata.unidata_version`) versus the Rust tokenizer's;
characters added to Unicode between the two versions could be split differently.
`tests/test_tokenizer.py` checks all of it against `tokenizers` on files built by the tests.

Chat prompts (a checkpoint's chat template, and the ChatML fallback) are pretrained/chat.py's.

Run `python -m pretrained.tokenizer path/to/tokenizer.json "some text"` to tokenize with a real file.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata



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


# Unicode's White_Space property (PropList.txt): what `\s` means in the reference's regex engine.
# Python's `\s` is str.isspace(), which also takes U+001C..U+001F (bidi class B/S) besides these.
WHITE_SPACE = "".join(re.escape(chr(cp)) for cp in range(0x3001) if chr(cp).isspace() and not 0x1C <= cp <= 0x1F)


def translate_regex(pattern: str) -> str:
    r"""A tokenizer.json split regex for Python's `re`: `\p{L}`, `\p{N}`, `\s` (also inside [...])
    and `\S` become explicit classes; everything else the patterns use (`(?i:...)`, `(?!...)`,
    `{1,3}`) means the same in `re`."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        m = re.match(r"\\p\{(L|N)\}|\\s|\\S", pattern[i:])
        if m:
            if m.group() == r"\S":
                if in_class:
                    raise ValueError(rf"tokenizer.json: regex {pattern!r}: \S inside [...] is not supported")
                out.append(f"[^{WHITE_SPACE}]")
            else:
                body = WHITE_SPACE if m.group() == r"\s" else unicode_class(m.group(1))
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
NORMAL_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


def split_isolated(regex: re.Pattern, text: str) -> list[str]:
    """`Split` with behavior 'Isolated': every match is a piece, and so is the text between matches."""
    pieces, pos = [], 0
    for m in regex.finditer(text):
        if m.end() > m.start():
            pieces += [text[pos: m.start()], m.group()]
            pos = m.end()
    return [p for p in pieces + [text[pos:]] if p]


def _steps(spec: dict | None, key: str) -> list[dict]:
    """The steps of a normalizer / pre-tokenizer / post-processor / decoder: a `Sequence` is
    flattened (its list is under `key`), null or an empty Sequence is no step at all."""
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        return [p for sub in spec.get(key) or [] for p in _steps(sub, key)]
    return [spec]


def _refuse(field: str, value: object, supported: str) -> ValueError:
    return ValueError(f"tokenizer.json: {field} {value!r} is not supported ({supported}); it would change the ids")


class AddedTokens:
    """Added tokens of one kind (raw or normalised), found leftmost-longest as `tokenizers` does."""

    def __init__(self, tokens: dict[str, int]):
        self.ids = tokens
        # longest first: at each position the longest added token wins
        self.regex = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))) if tokens else None

    def cut(self, text: str) -> list[str | int]:
        """The text with these tokens replaced by their ids: [str, id, str, ...], no empty strings."""
        out: list[str | int] = []
        pos = 0
        for m in self.regex.finditer(text) if self.regex else []:
            out += [text[pos: m.start()], self.ids[m.group()]]
            pos = m.end()
        return [p for p in out + [text[pos:]] if p != ""]


class BPETokenizer:
    """Byte-level BPE with the vocabulary, merges, added tokens, normalizer, pre-tokenizer,
    post-processor and decoder of a `tokenizer.json`: encodes and decodes like `tokenizers`,
    or refuses the file with a ValueError naming the field it does not implement."""

    def __init__(self, spec: dict):
        for field in ("truncation", "padding"):
            if spec.get(field):
                raise _refuse(field, spec[field], "only null")
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"only byte-level BPE tokenizers are supported, this one is {model.get('type')!r}")
        for field, fine in [("dropout", (None, 0)), ("continuing_subword_prefix", (None, "")),
                            ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False))]:
            if model.get(field) not in fine:
                raise _refuse(f"model.{field}", model[field], f"only {fine[-1]!r} or null")
        self.vocab: dict[str, int] = dict(model["vocab"])
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.ignore_merges = bool(model.get("ignore_merges", False))  # Llama 3: a whole piece in the vocab wins
        self.normal_forms = [self._normal_form(n) for n in _steps(spec.get("normalizer"), "normalizers")]
        self.pre_steps = self._pre_tokenizer(spec.get("pre_tokenizer"))
        self.prefix_ids, self.suffix_ids = self._post_processor(spec.get("post_processor"))
        for d in _steps(spec.get("decoder"), "decoders") or [{"type": None}]:
            if d.get("type") != "ByteLevel":
                raise _refuse("decoder", d.get("type"), "only ByteLevel")

        added = spec.get("added_tokens") or []
        for t in added:
            for flag in ("lstrip", "rstrip", "single_word"):
                if t.get(flag):
                    raise _refuse(f"added token {t['content']!r}: {flag}", True, "only false")
        self.added = {t["content"]: t["id"] for t in added}
        self.special_ids = {t["id"] for t in added if t.get("special")}
        # `normalized: false` tokens are found in the raw text; the others in the normalised text,
        # as their own normalised form, which is also what they decode to (as in tokenizers, where
        # `normalized` defaults to `not special`)
        raw = [t for t in added if not t.get("normalized", not t.get("special"))]
        normed = [t for t in added if t not in raw]
        self.raw_added = AddedTokens({t["content"]: t["id"] for t in raw})
        self.normed_added = AddedTokens({self.normalize(t["content"]): t["id"] for t in normed})
        self.id_to_token = ({i: t for t, i in self.vocab.items()} | {t["id"]: t["content"] for t in raw}
                            | {t["id"]: self.normalize(t["content"]) for t in normed})
        self.b2u = byte_to_unicode()
        self.u2b = {u: b for b, u in self.b2u.items()}
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str) -> "BPETokenizer":
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    @staticmethod
    def _normal_form(norm: dict) -> str:
        if norm.get("type") not in NORMAL_FORMS:
            raise _refuse("normalizer", norm.get("type"), f"only {', '.join(NORMAL_FORMS)} or a Sequence of them")
        return norm["type"]

    @staticmethod
    def _pre_tokenizer(pre: dict | None) -> list[tuple[str, object]]:
        """Steps ("split", regex) for each Split or Digits, then ("bytelevel", (add_prefix_space, its regex or None))."""
        steps: list[tuple[str, object]] = []
        for p in _steps(pre, "pretokenizers"):
            if steps and steps[-1][0] == "bytelevel":
                raise _refuse("pre_tokenizer after ByteLevel", p.get("type"), "ByteLevel must come last")
            if p.get("type") == "Split":
                if p.get("behavior") != "Isolated" or p.get("invert"):
                    raise _refuse("pre_tokenizer Split behavior/invert", (p.get("behavior"), p.get("invert")),
                                  "only behavior 'Isolated', invert false")
                pattern = p["pattern"].get("Regex") or re.escape(p["pattern"]["String"])
                try:
                    steps.append(("split", re.compile(translate_regex(pattern))))
                except re.error as e:  # e.g. \p{Lu}, \p{Han}, \X: Unicode classes we do not translate
                    raise _refuse("pre_tokenizer Split pattern", pattern, f"a regex this tokenizer can read ({e})") from None
            elif p.get("type") == "Digits":  # SmolLM2: every digit its own piece, or runs of digits
                pattern = r"\p{N}" if p.get("individual_digits") else r"\p{N}+"  # (Rust's char::is_numeric: N*)
                steps.append(("split", re.compile(translate_regex(pattern))))
            elif p.get("type") == "ByteLevel":
                regex = re.compile(translate_regex(GPT2_SPLIT)) if p.get("use_regex", True) else None
                steps.append(("bytelevel", (bool(p.get("add_prefix_space", False)), regex)))
            else:
                raise _refuse("pre_tokenizer", p.get("type"), "only Split, Digits and ByteLevel")
        if not steps or steps[-1][0] != "bytelevel":
            raise _refuse("pre_tokenizer", pre and pre.get("type"), "a byte-level BPE needs a ByteLevel pre-tokenizer")
        return steps

    @staticmethod
    def _post_processor(post: dict | None) -> tuple[list[int], list[int]]:
        """The ids that `add_special_tokens=True` puts before and after the text."""
        prefix: list[int] = []
        suffix: list[int] = []
        for p in _steps(post, "processors"):
            if p.get("type") == "ByteLevel":
                continue  # it only adjusts offsets
            if p.get("type") != "TemplateProcessing":
                raise _refuse("post_processor", p.get("type"), "only ByteLevel and TemplateProcessing")
            seen_text = False
            for item in p.get("single") or []:
                if "Sequence" in item:
                    seen_text = True
                elif "SpecialToken" in item:
                    (suffix if seen_text else prefix).extend(p["special_tokens"][item["SpecialToken"]["id"]]["ids"])
                else:
                    raise _refuse("post_processor TemplateProcessing item", item, "only Sequence and SpecialToken")
        return prefix, suffix

    @property
    def vocab_size(self) -> int:
        return max(self.id_to_token) + 1

    def token_id(self, token: str) -> int:
        if token in self.added:
            return self.added[token]
        if token not in self.vocab:
            raise ValueError(f"{token!r} is not a token of this vocabulary")
        return self.vocab[token]

    def normalize(self, text: str) -> str:
        """Step 2."""
        for form in self.normal_forms:
            text = unicodedata.normalize(form, text)
        return text

    def _pieces(self, text: str) -> list[str]:
        """Step 3: the pre-tokenized pieces of a normalised text, as byte symbols."""
        pieces = [text]
        for kind, arg in self.pre_steps:
            if kind == "split":
                pieces = [q for p in pieces for q in split_isolated(arg, p)]
            else:
                prefix_space, regex = arg
                pieces = [" " + p if prefix_space and not p.startswith(" ") else p for p in pieces]
                if regex is not None:
                    pieces = [q for p in pieces for q in split_isolated(regex, p)]
        return ["".join(self.b2u[b] for b in p.encode("utf-8")) for p in pieces]

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
            raise ValueError(f"symbol {e.args[0]!r} is not in the vocabulary (an incomplete tokenizer.json? "
                             "model.unk_token is not implemented)") from None
        self.cache[piece] = ids
        return ids

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; added/special tokens that appear literally are kept whole.

        add_special_tokens: apply the post-processor (e.g. Llama 3's <|begin_of_text|> in front),
        as `tokenizers`' encode does by default. Off by default here: prompts are rendered chat
        templates, which write their special tokens themselves (transformers' apply_chat_template
        tokenizes with add_special_tokens=False for the same reason).
        """
        ids: list[int] = []
        for part in self.raw_added.cut(text):
            for sub in [part] if isinstance(part, int) else self.normed_added.cut(self.normalize(part)):
                ids += [sub] if isinstance(sub, int) else [i for piece in self._pieces(sub) for i in self._bpe(piece)]
        return self.prefix_ids + ids + self.suffix_ids if add_special_tokens else ids

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        """The text of `ids` (the ByteLevel decoder); `skip_special` leaves the special tokens out."""
        buf = bytearray()
        for i in ids:
            tok = self.id_to_token.get(int(i))
            if tok is None:
                raise ValueError(f"id {i} is not in the vocabulary")
            if skip_special and int(i) in self.special_ids:
                continue
            if all(c in self.u2b for c in tok):
                buf += bytes(self.u2b[c] for c in tok)
            else:  # a token outside the byte table (e.g. an added "<think>\n"): its own text
                buf += tok.encode("utf-8")
        return buf.decode("utf-8", errors="replace")


def main() -> None:
    from tools.cli import ArgumentParser
    ap = ArgumentParser(description="Encode a text with a tokenizer.json (ids -> tokens -> decoded text).")
    ap.add_argument("tokenizer_json", help="a pretrained model's tokenizer.json")
    ap.add_argument("text", help="the text to encode")
    args = ap.parse_args()
    tok = BPETokenizer.from_file(args.tokenizer_json)
    ids = tok.encode(args.text)
    print(ids, "->", [tok.id_to_token[i] for i in ids], "->", repr(tok.decode(ids)))


if __name__ == "__main__":
    from tools.cli import run
    run(main)
