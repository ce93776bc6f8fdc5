"""
Tokenizers.

`WordTokenizer`: a fixed vocabulary of whitespace-separated words, for the synthetic tasks
(every node label, operator and special symbol is one token). Built from the task's word list,
so the ids are deterministic.

Run `python tokenizer.py` for a round trip on a small vocabulary.
"""

from __future__ import annotations


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


def main() -> None:
    tok = WordTokenizer(["a", "b", "=", "<eos>"])
    ids = tok.encode("a b = b <eos>")
    print(ids, "->", tok.decode(ids))


if __name__ == "__main__":
    main()
