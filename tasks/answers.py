r"""The final answer of a math solution: finding it in a completion, and deciding whether two answers
are the same. Used by the math tasks for the reward, Pass@k and majority vote.

    python -m tasks.answers 'So she pays $9{,}500 in all. The answer is $9{,}500.'   # extracted answer, its key
    python -m tasks.answers --gold '\frac{1}{2}' 'Thus $x = \boxed{0.5}$.'           # ... and equivalence to a gold answer

Everything this file decides is written here, in one place.

extract_answer(text) -> str | None: the final answer of a completion is the first of
    1. the last \boxed{...} or \fbox{...} (balanced, nested braces; `\boxed 5` without braces too);
       boxes with only a comma, `;`, `and` or `or` between them are one answer, their list
       (`$\boxed{3}$ and $\boxed{5}$` gives `3, 5`, as math-verify reads it);
    2. else what follows the last `####` on its line (GSM8K's format), skipping text such as a
       markdown heading `#### Step 2: ...`; a line that starts with a number and goes on in words
       (`#### 18 eggs, not 20`) gives that number;
    3. else what follows the last "answer is" / "answer:" up to the end of its sentence or clause
       (`The answer is 7, because ...` gives `7`; the content
       of a $...$ there, even an unclosed one: `The answer is $9{,}500.` gives `9{,}500`); of a
       computation there, the value it ends in (`The answer is 2 + 3 = 5.` gives `5`; an equation in
       variables, `2x - y = 0`, stays whole);
    4. else the last number in the text (thousands separators, decimals, fractions, mixed numbers
       `2 1/4`, 1.5 \times 10^3), with its sign unless the sign follows an operand (`x = − 7` gives
       -7, `12 − 7` gives 7).
    None when there is none of these.

normalize(answer) -> str: a canonical key, for majority vote. Answers that are rational numbers
    get the number's exact value (`9{,}500`, `9500.0`, `\$9,500` -> '9500'; `\frac12`, `0.5`, `1/2`
    -> '1/2'); `x = 3` keys as '3'; `50\%` keys as '50'; sets and unordered lists are sorted; any
    other answer gets a canonical spelling of its parse, so `\sqrt{8}` and `2\sqrt{2}` are
    equivalent but have different keys.

equivalent(gold, pred, timeout) -> bool, by these rules:
  - Numbers compare exactly, as rationals: `\frac{1}{2}` = `0.5` = `1/2` = `\frac12`, `1,000` = `1000`,
    `0.\overline{3}` = `1/3`, but `0.333` != `1/3` and `3.14` != `\pi` (a decimal is the exact
    number it spells, not an approximation of something else).
  - A percentage equals its number and its value: `50\%` = `50` and `50\%` = `0.5` (questions ask
    "what percent" and golds say `50`; others want the fraction), but `50` != `0.5`. When both
    sides are percentages they compare as numbers.
  - Units and decoration are dropped: `\$`, `^\circ` (so `30^\circ` = `30`, not `\frac{\pi}{6}`),
    `\text{ cm}^2`, `\mbox{...}`, `\mathrm{...}` after a value, words after a number (`18 dollars`).
    Units are not converted: `3` != `3000 \text{ m}`.
  - What names the answer is dropped: `x = 3` = `3`, `f(x) = 2x+1` = `2x+1`, `x \in [2, 5)` = `[2, 5)`.
    Two equations are equal when their sides are, or `lhs - rhs` of one is a nonzero constant
    times the other's (`y = 2x + 3` = `2x - y + 3 = 0`). Equations naming distinct variables are
    the tuple of their values in alphabetical order of the names: `y = 4, x = 3` = `(3, 4)`.
  - Tuples and intervals compare item by item and bracket by bracket (`(1, 2]` != `(1, 2)`);
    an inequality in one variable is its interval (`x > 1` = `(1, \infty)`, `x \ne 1` =
    `(-\infty, 1) \cup (1, \infty)`); `\mathbb{R}` = `(-\infty, \infty)`; sets `\{...\}` and bare
    comma lists `1, 2` compare as unordered collections (also with each other), and a top-level
    `\pm` is both answers (`1 \pm \sqrt{2}` = `1 + \sqrt{2}, 1 - \sqrt{2}`); unions `\cup` compare
    as unordered; matrices entry by entry.
  - Everything else (radicals, \pi, e, i, trig, logs, expressions in variables, which are real) is
    equal only when sympy proves it: `simplify(gold - pred) == 0`, or, for constants, sympy's
    `equals` proves the difference 0 (a minimal polynomial: `\sqrt{3+2\sqrt2}` = `1+\sqrt2`).
    No tolerance: every value read is exact, and a tolerance makes `1000!` = `1000!+1` (relative)
    or `e^{-100}` = `2e^{-100}` (absolute); what sympy cannot decide (`\tanh(100)` vs `1`, or an
    identity it cannot prove) is not equal. `1/0` and `0/0` are not numbers: equal to nothing
    but their own spelling (`12:00` = `12:00`, but `12:00` != `1:00`).
  - Text answers (`\text{Monday}`, `\text{(C)}`, `No`) compare by their spelling: case of words,
    runs of spaces and `\text{...}` ignored, `(C)` = `C`; every other command is kept, with its
    braces (`\frac{1}{2}\foo` != `12`).
  - A comparison that sympy cannot finish within `timeout` seconds counts as not equivalent.

How an answer is read (`_clean`, then `_Parser`):
  - Unicode: − × ÷ · π ∞ √ ° ± ≤ ≥ ∪ ∈ become their LaTeX, superscript digits ² become ^{2}, vulgar
    fractions ½ become \frac{1}{2} (`3½` = 7/2), then NFKC (full-width digits, non-breaking spaces).
  - Spacing: `\!` vanishes; `{,}`, `\,`, `\ `, `~` and thin spaces between digit groups are thousands
    separators (`9{,}500`, `1,\!000`, `9\,500`); so are `,` and ` ` when the whole answer is one
    number whose groups have three digits (`1,000` = 1000, but `1, 2` and `(1,234)` are lists).
  - `\dfrac`, `\tfrac` = `\frac`; `\frac12` = `\frac{1}{2}` (one character per argument, as in TeX);
    an integer followed by a fraction of two integers is a mixed number (`2\frac{1}{4}` = `2 1/4` =
    9/4); other numbers side by side are no product (`2 3` is text, not 6);
    `1.5e3`, `1.5 \times 10^{3}` are numbers; `3:4` is a ratio, 3/4; `e` is Euler's number and
    `i` the imaginary unit; `\log` without a base is base 10 (as in MATH), `\ln` is natural.
  - `\text{5 apples}`, all text with a value first, is `5\text{ apples}`: 5. `\hfill`, `\hspace{..}`
    are spacing.
  - An answer that does not parse, is all `\text{...}`, or contains a word of four or more
    letters, is text. So is one longer than 1000 characters, unread (its spelling is its key): that
    bounds the work of every comparison outside sympy's time limit, whatever the input.
  Known limits: `^\circ` is dropped even inside a function (`\sin 60^\circ` reads as the sine of 60
  radians); number words (`ten`) are text; `\pm` inside a tuple is not expanded; units are dropped,
  not compared (`3\text{ cm}` = `3\text{ m}`), and so are names (`x = 1` = `y = 1`); an identity
  sympy cannot prove (`\arctan 1 + \arctan 2 + \arctan 3` = `\pi`) is not equal.

Why a worker process for the time limit: sympy is pure Python, but one big-integer operation
(`10^{10^{10}}`) runs in C where no signal interrupts it, and signals reach only the main thread
(not a reward computed in a thread). A child process can always be killed. So every comparison
that needs sympy runs in a child (`python -c 'import answers; answers.serve()'`, one per process
that uses it, torchrun ranks included, started on first use) that is killed and restarted when it
exceeds the limit. Numbers and identical keys are decided here without it, so the training
process itself never imports sympy. The child's start (importing sympy, about a second) is not
counted in `timeout`.
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import operator
import os
import re
import select
import signal
import subprocess
import sys
import threading
import unicodedata
from fractions import Fraction

from tools.cli import ArgumentParser, check_float, run

# ----------------------------------------------------------------------------------- spelling

_SYMBOLS = {"\u2212": "-", "\u00d7": r" \times ", "\u00f7": r" \div ", "\u00b7": r" \cdot ", "\u22c5": r" \cdot ",
            "\u03c0": r" \pi ", "\u221e": r" \infty ", "\u221a": r"\sqrt ", "\u00b0": r"^\circ", "\u00b1": r" \pm ",
            "\u2264": r" \le ", "\u2265": r" \ge ", "\u2260": r" \ne ", "\u222a": r" \cup ", "\u2208": r" \in ",
            "\u2044": "/"}
_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_VULGAR_FRACTIONS = "¼½¾⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"


def _unicode(text: str) -> str:
    """Unicode spellings of numbers and symbols -> ASCII / LaTeX (rules in the module docstring).
    Superscripts and vulgar fractions are rewritten before NFKC, which would turn `x²` into `x2`
    and `3½` into `31⁄2`."""
    text = re.sub(r"(?<=\d)[\u00a0\u2009\u202f](?=\d{3}(?!\d))", "", text)  # 9 500 with a thin space
    text = re.sub("[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+", lambda m: "^{" + m.group().translate(_SUPERSCRIPTS) + "}", text)

    def vulgar(m: re.Match) -> str:
        f = Fraction(unicodedata.numeric(m.group())).limit_denominator(10)
        return rf"\frac{{{f.numerator}}}{{{f.denominator}}}"

    text = re.sub(f"[{_VULGAR_FRACTIONS}]", vulgar, text)
    text = "".join(_SYMBOLS.get(c, c) for c in text)
    return unicodedata.normalize("NFKC", text)


def _latex_spacing(text: str) -> str:
    r"""LaTeX spacing commands -> nothing, a thousands separator (between digit groups) or a space."""
    text = re.sub(r"(?<!\\)\\!", "", text)  # negative thin space: MATH writes 1,\!000 (\\ is a line break)
    text = re.sub(r"(?<=\d)\{,\}(?=\d)", "", text)  # 9{,}500
    text = text.replace("{,}", ",")
    text = re.sub(r"(?<=\d)(?:\\[,:; ]|~)(?=\d{3}(?!\d))", "", text)  # 9\,500
    return re.sub(r"(?<!\\)\\[,:; ]|~|\\(?:q?quad|hfill?)(?![a-zA-Z])|\\[hv]space\*?\{[^{}]*\}", " ", text)


def _brace_pairs(text: str) -> dict[int, int]:
    r"""{index of a `{`: index just past the `}` that closes it} for every closed brace, in one pass
    (so finding every box is linear in the text). Escaped braces `\{ \}` do not count."""
    pairs, opened = {}, []
    for m in re.finditer(r"\\.|[{}]", text, re.DOTALL):
        if m.group() == "{":
            opened.append(m.start())
        elif m.group() == "}" and opened:
            pairs[opened.pop()] = m.end()
    return pairs


_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])\s*")
_UNBRACED_BOX = re.compile(r"[^\s$]+")  # \boxed 5
# what may stand between the boxes of one answer: \boxed{3}, \boxed{5} / $\boxed{3}$ and $\boxed{5}$
_BOX_SEPARATOR = re.compile(r"(?:\s|\$|\\[()\[\]])*(?:[,;]|(?:\\text\s*\{\s*)?\b(?:and|or)\b\s*\}?)(?:\s|\$|\\[()\[\]])*")


def last_boxed(text: str) -> str | None:
    r"""Content of the last complete \boxed{...} / \fbox{...} (or `\boxed 5`), or None. Boxes written one
    after another with only a comma, `;`, `and` or `or` between them are one answer, their list:
    `\boxed{3}, \boxed{5}` gives `3, 5`."""
    pairs = _brace_pairs(text)
    boxes = list(_BOX.finditer(text))
    for i in reversed(range(len(boxes))):
        m = boxes[i]
        if not text.startswith("{", m.end()):
            token = _UNBRACED_BOX.match(text, m.end())
            if token:
                return token.group().rstrip(".")
            continue
        end = pairs.get(m.end())
        if end is None:
            continue
        items, start = [text[m.end() + 1:end - 1].strip()], m.start()
        for previous in reversed(boxes[:i]):  # the boxes before it, while only a separator stands between
            close = pairs.get(previous.end()) if text.startswith("{", previous.end()) else None
            if close is None or close > start or start - close > 40 or not _BOX_SEPARATOR.fullmatch(text, close, start):
                break
            items.insert(0, text[previous.end() + 1:close - 1].strip())
            start = previous.start()
        return ", ".join(items)
    return None


# ---------------------------------------------------------------------------------- extraction

_ANSWER_IS = re.compile(r"\banswer\s*(?:is\b|:)[\s:]*", re.IGNORECASE)
_INT = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"  # thousands-separated or plain digits
_LAST_NUMBER = re.compile(rf"""
    (?<![\w.])(?:[-+]\s*)?(?:
        (?:\d+\s*)?(?:\\frac\{{[-+]?\d+\}}\{{\d+\}} | \\frac\d\d)   # \frac{1}{2}, \frac12, 3\frac12
      | (?:\d+[ \t]+)?(?:{_INT})/\d+                     # 3/4, 2 1/4
      | (?:(?:{_INT})(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?   # 9,500  2.5  .5  1.5e3
        (?:\s*\\(?:times|cdot)\s*10\^(?:\{{[-+]?\d+\}}|\d))?   # 1.5 \times 10^{3}
    )(?:\s*%)?""", re.VERBOSE)
# what a binary + / - follows: a digit, a closing bracket, ! or %, or a one-letter variable (not a word)
_OPERAND_END = re.compile(r"(?:[\d)\]}!%]|(?<![\\A-Za-z])[A-Za-z])$")
_VARIABLE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]")  # a letter that is not part of a word or a \command


def _last_number(text: str) -> str | None:
    r"""The last number in the text, with its sign unless the sign is a binary operator (`x = − 7` is
    -7, `12 − 7` ends with 7)."""
    numbers = list(_LAST_NUMBER.finditer(text))
    if not numbers:
        return None
    last = numbers[-1]
    if last.group()[0] in "+-" and _OPERAND_END.search(text[max(0, last.start() - 40):last.start()].rstrip()[-2:]):
        return last.group()[1:].strip()
    return last.group().strip()


def _answer_span(rest: str) -> str:
    r"""The answer right after "answer is": the content of a leading $...$ / \(...\) / \[...\]
    (to the end of the line when unclosed), else the text up to the end of the sentence."""
    line = re.sub(r"\*\*|__", "", rest.lstrip().split("\n", 1)[0])  # markdown bold
    for open_, close in (("$$", r"(?<!\\)\$\$"), ("$", r"(?<!\\)\$"), (r"\(", r"\\\)"), (r"\[", r"\\\]")):
        if line.startswith(open_):
            end = re.search(close, line[len(open_):])  # (?<!\\): \$ is a dollar sign, not the closing $
            line = line[len(open_):] if end is None else line[len(open_):len(open_) + end.start()]
            break
    # a sentence ends at a period that is followed by a space or the end (not 9.5)
    span = re.split(r"\.(?=\s|$)", line, maxsplit=1)[0].strip(" *")
    # so does a clause: `7, because Tom gets 7` is 7 (a list `1, 2, and 3` goes on)
    span = re.split(r",\s+(?=[A-Za-z]{2,})(?!(?:and|or)\b)", span, maxsplit=1)[0].strip()
    # a computation that ends in its value (`2 + 3 = 5`, `h = 2 + 3 = 5`): the value after the last `=`;
    # an equation in variables (`x = 5`, `2x - y = 0`) is the answer itself
    sides = span.split("=")
    if len(sides) > 1 and _LAST_NUMBER.match(sides[-1].strip()) and not all(_VARIABLE.search(x) for x in sides[:-1]):
        return sides[-1].strip()
    return span


def extract_answer(text: str) -> str | None:
    """The final answer of a completion, as written (Unicode already normalised), or None; the rules
    are in the module docstring. `normalize` / `equivalent` read what this returns."""
    text = _unicode(text)
    boxed = last_boxed(text)
    if boxed:
        return boxed
    for line in reversed(re.findall(r"####(.*)", text)):
        tree = _parse(line)
        if tree is not None and tree[0] != "text":  # not a markdown heading: #### Step 2
            return line.strip()
        lead = _LAST_NUMBER.match(_latex_spacing(line.strip()))
        if lead:  # `#### 18 eggs, not 20`: the number the line starts with, not the last one
            return lead.group().strip()
    said = list(_ANSWER_IS.finditer(text))
    if said:
        span = _answer_span(text[said[-1].end():])
        if span:
            return span
    return _last_number(_latex_spacing(text))


# --------------------------------------------------------------------------------- clean + parse

_TEXT = r"\\(?:text|textrm|mbox|mathrm)\s*"
_TEXT_GROUP = re.compile(_TEXT + r"\{([^{}]*)\}(?:\s*\^\s*\{?\d\}?)?")  # \text{ cm}^2
_NUMBER_THEN_WORDS = re.compile(r"([^A-Za-z\\]*\d[^A-Za-z\\]*?)\s+[A-Za-z]{2,}(?:[\s.]+[A-Za-z]{2,})*\.?(?:\^\{?\d\}?)?")  # 18 dollars
_MAX_LENGTH = 1000  # longer answers are not parsed, only compared as text


def _clean(answer: str) -> str:
    """One answer -> the spelling the parser reads: boxes, math delimiters, spacing, sizing commands,
    units and decoration removed (rules in the module docstring)."""
    s = _unicode(answer)
    boxed = last_boxed(s)
    s = _latex_spacing(boxed if boxed is not None else s)
    s = re.sub(r"\\(?:left|right)\.", "", s)  # invisible delimiters
    s = re.sub(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    s = re.sub(r"\\(?:displaystyle|textstyle)(?![a-zA-Z])", "", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])", "", s)  # degrees are a unit
    s = s.replace(r"\%", "%").replace(r"\$", "")
    s = re.sub(r"\\mathbb\s*\{?\s*R\s*\}?", r"(-\\infty, \\infty)", s)  # all reals
    s = re.sub(r"\\[()\[\]]", "", s).replace("$", "")
    s = re.sub(r"\\(?:textbf|mathbf|boldsymbol|bm|mathit|textit|emph)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\mathrm\s*\{\s*([a-zA-Z])\s*\}", r"\1", s)  # \mathrm{e}
    s = re.sub(_TEXT + r"\{\s*(?:or|and)\s*\}|\b(?:or|and)\b", ",", s)  # 3 \text{ or } 5 is a list
    # \text{...} beside a value is a unit; on its own it is the answer (\text{Monday}, \text{(C)})
    rest = _TEXT_GROUP.sub("", s)
    if re.search(r"[\w\\]", rest):
        s = rest
    elif re.match(r"\s*[-+]?\.?\d", _TEXT_GROUP.sub(r"\1", s)):
        s = _TEXT_GROUP.sub(r"\1", s)  # all text, a value first: \text{5 apples} is 5\text{ apples}
    words = _NUMBER_THEN_WORDS.fullmatch(s.strip())
    if words:
        s = words.group(1)  # 18 dollars, 5 square units
    s = s.strip().rstrip(".,;").strip()
    # a mixed number: 2 1/4 is 2\frac{1}{4} = 9/4 (two numbers side by side mean nothing else)
    s = re.sub(r"(?<![\d.])(\d+)[ \t]+(\d+)[ \t]*/[ \t]*(\d+)(?![\d.])", r"\1\\frac{\2}{\3}", s)
    # a whole answer that is one number with 3-digit groups: the commas / spaces are separators
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?|[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?%?", s):
        s = s.replace(",", "").replace(" ", "")
    return s


_TEXT_WRAPPER = re.compile(r"\\(?:text|textrm|textnormal|mbox|mathrm|textbf|mathbf|textit|mathit|emph)\s*(?=\{)")


def _text_key(s: str) -> str:
    r"""Canonical spelling of a text answer: runs of spaces are one space, words are lower case, the
    wrappers \text{...} of words are dropped, (C) -> C. Every other command is kept with its braces
    (`\frac{1}{2}\foo` is not `12`, `\frac{1}{23}` is not `\frac{12}{3}`): braces are dropped only
    from plain text."""
    s = _TEXT_WRAPPER.sub("", s)
    if not re.search(r"\\[a-zA-Z]", s):
        s = s.replace("{", "").replace("}", "")
    parts = re.split(r"(\\[a-zA-Z]+)", s)  # text, command, text, ...: \Gamma is not \gamma
    s = "".join(part if i % 2 else part.lower() for i, part in enumerate(parts))
    s = " ".join(s.split()).strip(" .")
    letter = re.fullmatch(r"\(?([a-z])\)?", s)
    return letter.group(1).upper() if letter else s


class ParseError(ValueError):
    """An answer outside the LaTeX subset `_Parser` reads; such an answer is compared as text."""


_TOKEN = re.compile(r"(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|(\\[a-zA-Z]+|\\.)|(\s+)|(.)")
_CONSTANTS = {r"\pi": ("const", "pi"), r"\infty": ("const", "oo"), "e": ("const", "e"), "i": ("const", "i")}
_GREEK = set(r"""\alpha \beta \gamma \delta \epsilon \varepsilon \zeta \eta \theta \vartheta \iota \kappa \lambda
    \mu \nu \xi \rho \sigma \tau \upsilon \phi \varphi \chi \psi \omega \Gamma \Delta \Theta \Lambda \Xi \Sigma
    \Phi \Psi \Omega""".split())
_FUNCTIONS = {r"\sin", r"\cos", r"\tan", r"\cot", r"\sec", r"\csc", r"\arcsin", r"\arccos", r"\arctan",
              r"\sinh", r"\cosh", r"\tanh", r"\ln", r"\log", r"\exp"}
_RELATIONS = {"=": "=", r"\in": "=", "<": "<", r"\lt": "<", ">": ">", r"\gt": ">", r"\le": "<=", r"\leq": "<=",
              r"\ge": ">=", r"\geq": ">=", r"\ne": "!=", r"\neq": "!="}
_MUL_OPS = {"*": "mul", r"\cdot": "mul", r"\times": "mul", "/": "div", r"\div": "div", ":": "div"}  # 3:4 = 3/4
_CLOSERS = {"(": (")", "]"), "[": (")", "]"), r"\langle": (r"\rangle",)}
_MATRICES = {"pmatrix", "bmatrix", "Bmatrix", "matrix", "smallmatrix"}


def _is_number(token: str | None) -> bool:
    return token is not None and (token[0].isdigit() or (token[0] == "." and len(token) > 1))


class _Parser:
    r"""Recursive descent over one cleaned answer. The tree is nested tuples (kind, ...):
        ('num', Fraction)  ('sym', name)  ('const', 'pi'|'e'|'i'|'oo')  ('text', key)
        ('neg', a)  ('add'|'sub'|'mul'|'div'|'pow'|'pm', a, b)  ('sqrt', a, n|None)  ('func', name, a, base|None)
        ('abs', a)  ('fact', a)  ('binom', n, k)  ('percent', a)  ('rel', op, lhs, rhs)
        ('seq', open, [items], close)  ('set', [items])  ('list', [items])  ('union', [parts])  ('matrix', [[rows]])
    Grammar (loosest first):
        answer   := relation (',' relation)*            several -> 'list'
        relation := union (relop union)?                 a > b is stored as b < a
        union    := expr ('\cup' expr)*
        expr     := ['+'|'-'|'\pm'] term (('+'|'-'|'\pm') term)*
        term     := factor ((mulop)? factor)*           implicit multiplication: 2\sqrt{3}, 3x; 2\frac14 = 9/4
        factor   := ['-'] postfix ('^' script)?
        postfix  := primary ('!' | '%')*
    """

    def __init__(self, text: str):
        self.tokens = [m.group() for m in _TOKEN.finditer(text) if not m.group(3)]
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ParseError("the answer ends too early")
        self.i += 1
        return token

    def expect(self, token: str) -> None:
        if self.take() != token:
            raise ParseError(f"expected {token!r}")

    def answer(self) -> tuple:
        items = [self.relation()]
        while self.peek() == ",":
            self.take()
            items.append(self.relation())
        if self.peek() is not None:
            raise ParseError(f"cannot read {self.peek()!r}")
        if self.tokens.count(r"\pm") > 3:
            raise ParseError("too many \\pm")  # 2^k answers
        items = [option for item in items for option in _expand_pm(item)]
        return items[0] if len(items) == 1 else ("list", items)

    def relation(self) -> tuple:
        lhs = self.union()
        if self.peek() not in _RELATIONS:
            return lhs
        op = _RELATIONS[self.take()]
        rhs = self.union()
        if self.peek() in _RELATIONS:
            raise ParseError("chained relations are not read")
        if op in (">", ">="):
            return ("rel", op.replace(">", "<"), rhs, lhs)
        return ("rel", op, lhs, rhs)

    def union(self) -> tuple:
        parts = [self.expr()]
        while self.peek() == r"\cup":
            self.take()
            parts.append(self.expr())
        return parts[0] if len(parts) == 1 else ("union", parts)

    def expr(self) -> tuple:
        if self.peek() in ("+", "-"):  # a sign applies to the whole first term: -2\frac{1}{4} = -9/4
            node = ("neg", self.term()) if self.take() == "-" else self.term()
        elif self.peek() == r"\pm":  # \pm 1 = 0 \pm 1
            self.take()
            node = ("pm", ("num", Fraction(0)), self.term())
        else:
            node = self.term()
        while self.peek() in ("+", "-", r"\pm"):
            op = {"+": "add", "-": "sub", r"\pm": "pm"}[self.take()]
            node = (op, node, self.term())
        return node

    def term(self) -> tuple:
        node = self.factor()
        while True:
            token = self.peek()
            if token in _MUL_OPS:
                self.take()
                node = (_MUL_OPS[token], node, self.factor())
            elif token == r"\frac" and node[0] == "num" and node[1].denominator == 1:
                frac = self.factor()
                mixed = frac[0] == "div" and all(x[0] == "num" and x[1].denominator == 1 for x in frac[1:])
                node = ("add", node, frac) if mixed else ("mul", node, frac)  # 2\frac{1}{4} = 9/4
            elif _is_number(token) and node[0] == "num":
                raise ParseError("two numbers side by side")  # not a product: 2 3 is not 6 (2 1/4 is read before)
            elif self.starts_factor(token):
                node = ("mul", node, self.factor())
            else:
                return node

    def starts_factor(self, token: str | None) -> bool:
        """Can `token` begin an implicitly multiplied factor? (Not | or [, which close or open lists.)"""
        if token is None:
            return False
        if _is_number(token) or token.isalpha() or token in ("(", "{"):
            return True
        return token in _CONSTANTS or token in _GREEK or token in _FUNCTIONS or token in (r"\frac", r"\sqrt", r"\binom")

    def factor(self) -> tuple:
        if self.peek() in ("-", "+"):
            sign = self.take()
            node = self.factor()
            return ("neg", node) if sign == "-" else node
        node = self.postfix(self.primary())
        if self.peek() == "^":
            self.take()
            node = self.postfix(("pow", node, self.script()))
        return node

    def postfix(self, node: tuple) -> tuple:
        while self.peek() in ("!", "%"):
            node = ("fact" if self.take() == "!" else "percent", node)
        return node

    def script(self) -> tuple:
        """The argument of ^: a {group}, or one signed character / command."""
        if self.peek() == "-":
            self.take()
            return ("neg", self.script())
        return self.argument()

    def argument(self) -> tuple:
        r"""A TeX macro argument: a {group}, or a single character (\frac12 is \frac{1}{2})."""
        return self.primary(single=True)

    def group(self) -> tuple:
        node = self.relation()
        self.expect("}")
        return node

    def primary(self, single: bool = False) -> tuple:
        token = self.take()
        if _is_number(token):
            if single and token.isdigit() and len(token) > 1:
                self.tokens.insert(self.i, token[1:])
                token = token[0]
            return self.number(token)
        if token.isalpha():
            if self.peek() == "_":
                self.take()
                return ("sym", f"{token}_{self.subscript()}")
            return _CONSTANTS.get(token, ("sym", token))
        if token == "{":
            return self.group()
        if token in _CLOSERS:
            return self.bracketed(token)
        if token == r"\{":
            return ("set", self.items(r"\}"))
        if token in (r"\emptyset", r"\varnothing"):
            return ("set", [])
        if token == "|":
            node = self.expr()
            self.expect("|")
            return ("abs", node)
        if token == r"\frac":
            return ("div", self.argument(), self.argument())
        if token == r"\binom":
            return ("binom", self.argument(), self.argument())
        if token == r"\sqrt":
            index = None
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.expect("]")
            return ("sqrt", self.argument(), index)
        if token in _FUNCTIONS:
            return self.function(token[1:])
        if token in _CONSTANTS:
            return _CONSTANTS[token]
        if token in _GREEK:
            return ("sym", token[1:])
        if token == r"\begin":
            return self.matrix()
        raise ParseError(f"cannot read {token!r}")

    def number(self, token: str) -> tuple:
        r"""A decimal literal, with a repeating part if \overline{digits} follows: 0.1\overline{6} = 1/6."""
        exponent = re.search(r"[eE]([-+]?\d+)$", token)
        if exponent and abs(int(exponent.group(1))) > 1000:  # Fraction("1e300000000") alone would hang
            raise ParseError(f"{token!r}: an exponent beyond 1000 is not compared as a number")
        value = Fraction(token.rstrip("."))
        if _small(value) is None:  # larger than every rational this file computes with
            raise ParseError(f"{token!r}: too large to compare as a number")
        if self.peek() == r"\overline" and "." in token and "e" not in token.lower():
            self.take()
            self.expect("{")
            repeat = self.take()
            self.expect("}")
            if not repeat.isdigit():
                raise ParseError("\\overline needs digits")
            whole, decimals = token.split(".")
            # x = whole.decimals(repeat)(repeat)... : (all digits - the non-repeating ones) / (10^n (10^r - 1))
            value = Fraction(int(whole + decimals + repeat) - int(whole + decimals),
                             10 ** len(decimals) * (10 ** len(repeat) - 1))
        return ("num", value)

    def subscript(self) -> str:
        """The name part after _: x_1, a_{12}."""
        if self.peek() == "{":
            self.take()
            return self.raw_group()
        return self.take()

    def raw_group(self) -> str:
        """The tokens up to the closing }, as a string (after the { was taken)."""
        parts = []
        while self.peek() != "}":
            parts.append(self.take())
        self.take()
        return "".join(parts)

    def function(self, name: str) -> tuple:
        r"""\sin x, \sin(x), \sin^2 x = (\sin x)^2, \log_2 8."""
        power = base = None
        if name == "log" and self.peek() == "_":
            self.take()
            base = self.script()
        if self.peek() == "^":
            self.take()
            power = self.script()
        node = ("func", name, self.factor(), base)
        return node if power is None else ("pow", node, power)

    def items(self, close: str) -> list:
        items = []
        while self.peek() != close:
            items.append(self.relation())
            if self.peek() == ",":
                self.take()
            elif self.peek() != close:
                raise ParseError(f"expected ',' or {close!r}")
        self.take()
        return items

    def bracketed(self, open_: str) -> tuple:
        r"""( a ) is grouping; (a, b], [a, b), (a, b, c), \langle a, b \rangle are tuples / intervals."""
        items = [self.relation()]
        while self.peek() == ",":
            self.take()
            items.append(self.relation())
        close = self.take()
        if close not in _CLOSERS[open_]:
            raise ParseError(f"{open_!r} closed by {close!r}")
        if len(items) == 1:
            if (open_, close) not in (("(", ")"), ("[", "]")):
                raise ParseError("a half-open bracket around one item")
            return items[0]
        return ("seq", open_, items, close)

    def matrix(self) -> tuple:
        r"""\begin{pmatrix} a & b \\ c & d \end{pmatrix} (after \begin was taken)."""
        self.expect("{")
        name = self.raw_group()
        if name not in _MATRICES:
            raise ParseError(f"environment {name!r} is not a matrix")
        rows, row = [], [self.expr()]
        while self.peek() != r"\end":
            separator = self.take()
            if separator == "&":
                row.append(self.expr())
            elif separator == r"\\":
                rows.append(row)
                row = [] if self.peek() == r"\end" else [self.expr()]
            else:
                raise ParseError(f"cannot read {separator!r} in a matrix")
        if row:
            rows.append(row)
        self.take()
        self.expect("{")
        self.raw_group()
        if len({len(r) for r in rows}) != 1:
            raise ParseError("matrix rows of different lengths")
        return ("matrix", rows)


def _expand_pm(node: tuple) -> list[tuple]:
    r"""The answers a top-level \pm stands for: 1 \pm \sqrt{2} -> [1 + \sqrt{2}, 1 - \sqrt{2}]. (A \pm inside
    a tuple or set is left alone; it is not an expression, so it only equals the same spelling.)"""
    if node[0] == "pm":
        return [(op, a, b) for a in _expand_pm(node[1]) for b in _expand_pm(node[2]) for op in ("add", "sub")]
    if node[0] in ("seq", "set", "list", "union", "matrix"):
        return [node]
    options = [_expand_pm(x) if isinstance(x, tuple) else [x] for x in node[1:]]
    return [(node[0], *choice) for choice in itertools.product(*options)]


def _parse(answer: str) -> tuple | None:
    """The tree of one answer (see _Parser), ('text', key) when it is not maths, None when empty."""
    if len(answer) > _MAX_LENGTH:
        return ("text", _text_key(answer))
    s = _clean(answer)
    if not s:
        return None
    words = re.sub(r"\\(?:begin|end)\{[a-zA-Z]*\}", "", s)
    text_only = not _TEXT_GROUP.sub("", s).strip()
    if text_only or re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}", words):
        return ("text", _text_key(s))
    try:
        return _Parser(s).answer()
    except (ParseError, RecursionError, ValueError, ZeroDivisionError):
        # ValueError: a number literal beyond Python's int-string limit (4300 digits)
        return ("text", _text_key(s))


# ------------------------------------------------------------------------- exact rational values

_MAX_BITS = 4096  # rationals larger than this are left to sympy (and its time limit)


def _small(x: Fraction) -> Fraction | None:
    return x if max(x.numerator.bit_length(), x.denominator.bit_length()) <= _MAX_BITS else None


def _rational(node: tuple) -> Fraction | None:
    """The exact value of a tree made of rational arithmetic only, or None. Bounded work: powers,
    factorials and binomials whose result would exceed _MAX_BITS are not computed."""
    kind = node[0]
    if kind == "num":
        return _small(node[1])
    if kind == "neg":
        x = _rational(node[1])
        return None if x is None else -x
    if kind in ("add", "sub", "mul", "div", "pow"):
        x, y = _rational(node[1]), _rational(node[2])
        if x is None or y is None:
            return None
        if kind == "add":
            return _small(x + y)
        if kind == "sub":
            return _small(x - y)
        if kind == "mul":
            return _small(x * y)
        if kind == "div":
            return None if y == 0 else _small(x / y)
        if y.denominator != 1 or (x == 0 and y < 0):  # 4^{1/2}: sympy's business
            return None
        bits = max(x.numerator.bit_length(), x.denominator.bit_length())
        return x ** int(y) if bits * abs(y) <= _MAX_BITS else None
    if kind in ("fact", "binom"):
        args = [_rational(a) for a in node[1:]]
        if any(a is None or a.denominator != 1 or not 0 <= a <= 500 for a in args):
            return None
        if kind == "fact":
            return _small(Fraction(math.factorial(int(args[0]))))
        return Fraction(math.comb(int(args[0]), int(args[1])))
    return None


def _number(node: tuple) -> tuple[Fraction, bool] | None:
    """(value, is a percentage) of an answer that is a rational number, else None."""
    if node[0] == "percent":
        value = _rational(node[1])
        return None if value is None else (value, True)
    value = _rational(node)
    return None if value is None else (value, False)


def _same_number(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    (x, x_percent), (y, y_percent) = a, b
    if x_percent == y_percent:
        return x == y
    percent, other = (x, y) if x_percent else (y, x)
    return other in (percent, percent / 100)


# ------------------------------------------------------------------------------------- keys

_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "^", "pm": "±"}


def _key(node: tuple) -> str:
    """Canonical spelling of a tree: the exact value of a rational, sorted items of a set."""
    value = _rational(node)
    if value is not None:
        return str(value)
    kind, args = node[0], node[1:]
    if kind in ("text", "sym", "const"):
        return args[0]
    if kind == "percent":
        return _key(args[0])
    if kind == "neg":
        return f"-({_key(args[0])})"
    if kind in _OPERATORS:
        return f"({_key(args[0])}{_OPERATORS[kind]}{_key(args[1])})"
    if kind == "sqrt":
        return f"sqrt({_key(args[0])})" if args[1] is None else f"root({_key(args[0])},{_key(args[1])})"
    if kind == "func":
        name, arg, base = args
        return f"{name}({_key(arg)})" if base is None else f"{name}({_key(arg)},{_key(base)})"
    if kind == "abs":
        return f"|{_key(args[0])}|"
    if kind == "fact":
        return f"({_key(args[0])})!"
    if kind == "binom":
        return f"binom({_key(args[0])},{_key(args[1])})"
    if kind == "rel":
        op, lhs, rhs = args
        return _key(rhs) if op == "=" and _is_name(lhs) else f"{_key(lhs)}{op}{_key(rhs)}"
    if kind == "seq":
        open_, items, close = args
        return open_ + ",".join(_key(x) for x in items) + close
    if kind == "set":
        return "{" + ",".join(sorted(_key(x) for x in args[0])) + "}"
    if kind == "list":
        return ",".join(sorted(_key(x) for x in args[0]))
    if kind == "union":
        return " U ".join(sorted(_key(x) for x in args[0]))
    if kind == "matrix":
        return "[" + ";".join(",".join(_key(x) for x in row) for row in args[0]) + "]"
    raise AssertionError(f"unknown node {kind}")


def _is_name(node: tuple) -> bool:
    """Is this the left side of an answer `x = 3`, `f(x) = 2x + 1`, `f^{-1}(x) = ...`: a variable or a
    function applied (which parses as a product starting with a variable)?"""
    if node[0] == "mul":
        node = node[1]
        while node[0] == "mul":
            node = node[1]
        if node[0] == "pow":
            node = node[1]
    return node[0] == "sym"


def normalize(answer: str) -> str:
    """Canonical key of an answer (rules in the module docstring); '' for an empty answer."""
    node = _parse(answer)
    return "" if node is None else _key(node)


# ------------------------------------------------------------------------------- equivalence

def equivalent(gold: str, pred: str | None, timeout: float = 2.0) -> bool:
    """Is the answer `pred` (e.g. extract_answer(completion)) equal to `gold`? Rules in the module
    docstring. `timeout`: seconds sympy may take for this comparison (counts as False when
    exceeded); honest MATH answers take well under 0.2 s. Raises ValueError for an empty gold
    answer or a timeout that is not positive. pred None (nothing extracted) is False."""
    check_float("timeout", timeout, hint="seconds")
    gold_tree = _parse(gold)
    if gold_tree is None:
        raise ValueError("the gold answer is empty; give the reference answer of every problem")
    pred_tree = _parse(pred) if pred is not None else None
    if pred_tree is None:
        return False
    a, b = _number(gold_tree), _number(pred_tree)
    if a is not None and b is not None:
        return _same_number(a, b)
    if _key(gold_tree) == _key(pred_tree):
        return True
    if "text" in (gold_tree[0], pred_tree[0]):  # \text{no} vs No: the spellings decide
        return _spelling(gold, gold_tree) == _spelling(pred, pred_tree)
    return _WORKER.compare(gold, pred, timeout)


def _spelling(answer: str, tree: tuple) -> str:
    """The text key of an answer, also of one that parses (`No` is the product N o); a text tree holds it."""
    return tree[1] if tree[0] == "text" else _text_key(_clean(answer))


class _Worker:
    """The child process that runs sympy comparisons (why: module docstring). One request at a
    time (a lock), JSON [gold, pred] lines in, '1' / '0' lines out."""

    start_timeout = 120.0  # seconds to import sympy on a loaded machine

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.owner = 0  # pid that started proc: a forked child starts its own
        self.lock = threading.Lock()

    def start(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: tasks/ is a package
        self.proc = subprocess.Popen([sys.executable, "-c", "import tasks.answers; tasks.answers.serve()"], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.owner = os.getpid()
        if self.read_line(self.start_timeout) != "ready":
            self.stop()
            raise RuntimeError("the answer-comparison worker did not start: is sympy installed? "
                               "(pip install -r requirements.txt)")

    def read_line(self, timeout: float) -> str | None:
        """The worker's next line, or None if none came within `timeout` seconds or it died."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if ready else None

    def stop(self) -> None:
        if self.proc is not None and self.owner == os.getpid():
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def compare(self, gold: str, pred: str, timeout: float) -> bool:
        with self.lock:
            if self.proc is None or self.owner != os.getpid() or self.proc.poll() is not None:
                self.proc = None  # never touch a worker that belongs to the parent of a fork
                self.start()
            try:
                self.proc.stdin.write(json.dumps([gold, pred]) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                self.stop()
                return False
            reply = self.read_line(timeout)
            if reply not in ("0", "1"):  # over time (or died): kill it, the next call starts a fresh one
                self.stop()
                return False
            return reply == "1"


_WORKER = _Worker()
atexit.register(_WORKER.stop)


def serve() -> None:
    """The worker's loop: for each JSON [gold, pred] line on stdin, '1' or '0' on stdout."""
    import sympy  # noqa: F401  (imported before saying ready, so the import is not timed)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; the worker ends with its stdin
    print("ready", flush=True)
    for line in sys.stdin:
        gold, pred = json.loads(line)
        try:
            same = _same(_parse(gold), _parse(pred))
        except Exception:  # noqa: BLE001  sympy raises many kinds on odd input; such answers are not equal
            same = False
        print("1" if same else "0", flush=True)


# --------------------------------------------------------- structural comparison (worker side)

def _same(a: tuple, b: tuple) -> bool:
    """Equivalence of two trees (rules in the module docstring). Runs in the worker: uses sympy."""
    ka, kb = a[0], b[0]
    if "text" in (ka, kb):
        return _key(a) == _key(b)
    if (ka == "percent") != (kb == "percent"):
        percent, other = (a, b) if ka == "percent" else (b, a)
        return _same(percent[1], other) or _same(("div", percent[1], ("num", Fraction(100))), other)
    if ka == kb == "percent":
        return _same(a[1], b[1])
    if "rel" in (ka, kb):
        return _same_relation(a, b)
    collections = ("seq", "set", "list", "union", "matrix")
    if ka in collections or kb in collections:
        return _same_collection(a, b)
    return _same_expression(_sympy(a), _sympy(b))


def _same_relation(a: tuple, b: tuple) -> bool:
    if a[0] != "rel" or b[0] != "rel":
        relation, other = (a, b) if a[0] == "rel" else (b, a)
        op, lhs, rhs = relation[1:]
        if op == "=" and _is_name(lhs):
            return _same(rhs, other)  # x = 3 vs 3
        interval = _as_interval(relation)
        return interval is not None and _same(interval, other)  # x > 1 vs (1, \infty)
    (op_a, lhs_a, rhs_a), (op_b, lhs_b, rhs_b) = a[1:], b[1:]
    if op_a != op_b:
        return False
    if _same(lhs_a, lhs_b) and _same(rhs_a, rhs_b):
        return True
    if op_a in ("=", "!=") and _same(lhs_a, rhs_b) and _same(rhs_a, lhs_b):
        return True
    if op_a in ("=", "!="):  # y = 2x + 3 vs 2x - y + 3 = 0: lhs - rhs equal up to a nonzero constant
        import sympy
        da = _sympy(lhs_a) - _sympy(rhs_a)
        db = _sympy(lhs_b) - _sympy(rhs_b)
        if db != 0:
            ratio = sympy.simplify(da / db)
            return bool(ratio.is_number and ratio.is_finite and ratio != 0)
    return False


def _as_interval(relation: tuple) -> tuple | None:
    """x < a -> (-oo, a); a <= x -> [a, oo); x != a -> (-oo, a) U (a, oo); None for other relations."""
    op, lhs, rhs = relation[1:]
    infinity = ("const", "oo")
    if op == "!=" and lhs[0] == "sym":
        return ("union", [("seq", "(", [("neg", infinity), rhs], ")"), ("seq", "(", [rhs, infinity], ")")])
    if op not in ("<", "<="):
        return None
    if lhs[0] == "sym":
        return ("seq", "(", [("neg", infinity), rhs], ")" if op == "<" else "]")
    if rhs[0] == "sym":
        return ("seq", "(" if op == "<" else "[", [lhs, infinity], ")")
    return None


def _same_collection(a: tuple, b: tuple) -> bool:
    if "seq" in (a[0], b[0]):
        a, b = _as_tuple(a), _as_tuple(b)
    ka, kb = a[0], b[0]
    if ka in ("set", "list") and kb in ("set", "list") or ka == kb == "union":
        return _same_unordered(a[1], b[1])
    if ka == kb == "seq":
        (open_a, items_a, close_a), (open_b, items_b, close_b) = a[1:], b[1:]
        return (open_a, close_a) == (open_b, close_b) and len(items_a) == len(items_b) \
            and all(_same(x, y) for x, y in zip(items_a, items_b))
    if ka == kb == "matrix":
        rows_a, rows_b = a[1], b[1]
        return [len(r) for r in rows_a] == [len(r) for r in rows_b] \
            and all(_same(x, y) for ra, rb in zip(rows_a, rows_b) for x, y in zip(ra, rb))
    return False


def _as_tuple(node: tuple) -> tuple:
    """y = 4, x = 3 -> the ordered pair (3, 4): equations naming distinct variables, in alphabetical
    order of the names ((a, b), (x, y, z)); any other node unchanged."""
    if node[0] == "list" and all(x[0] == "rel" and x[1] == "=" and x[2][0] == "sym" for x in node[1]):
        names = [x[2][1] for x in node[1]]
        if len(set(names)) == len(names):
            return ("seq", "(", [x[3] for x in sorted(node[1], key=lambda x: x[2][1])], ")")
    return node


def _same_unordered(xs: list, ys: list) -> bool:
    if len(xs) != len(ys):
        return False
    unused = list(ys)
    for x in xs:
        match = next((i for i, y in enumerate(unused) if _same(x, y)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def _same_expression(x, y) -> bool:
    """sympy expressions, equal only when proven so: identical, or gold - pred simplifies to 0, or (no
    variables) sympy proves the difference 0 (`equals`: a minimal polynomial for algebraic numbers).
    Every value here is exact (a decimal is the rational it spells), so no tolerance is used: a
    floating-point evaluation (sympy's evalf tracks its error) may only prove a difference nonzero.
    A tolerance would make `1000!` = `1000!+1` (relative) or `e^{-100}` = `2e^{-100}` (absolute)."""
    import sympy
    if x.has(sympy.zoo, sympy.nan) or y.has(sympy.zoo, sympy.nan):
        return False  # 1/0 (12:00 read as a ratio), 0/0: not numbers, equal to nothing
    if x == y:
        return True
    if x.has(sympy.oo, -sympy.oo) or y.has(sympy.oo, -sympy.oo):
        return False  # infinities are equal only when identical; oo - oo is nan
    difference = sympy.simplify(x - y)
    if difference == 0:
        return True
    if difference.free_symbols:
        return False
    return difference.equals(0) is True  # None (undecided, e.g. tanh(100) - 1): not proven equal


_SYMPY_FUNCTIONS = {"sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
                    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh",
                    "tanh": "tanh", "ln": "log", "exp": "exp"}
_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow}


def _sympy(node: tuple):
    """A tree of one expression -> a sympy expression. Raises TypeError for a collection / relation."""
    import sympy
    kind, args = node[0], node[1:]
    if kind == "num":
        return sympy.Rational(args[0].numerator, args[0].denominator)
    if kind == "sym":
        return sympy.Symbol(args[0], real=True)  # MATH's variables are real: \sqrt{x^2} = |x|
    if kind == "const":
        return {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "oo": sympy.oo}[args[0]]
    if kind == "neg":
        return -_sympy(args[0])
    if kind == "percent":
        return _sympy(args[0]) / 100
    if kind in ("add", "sub", "mul", "div", "pow"):
        return _BINARY[kind](_sympy(args[0]), _sympy(args[1]))
    if kind == "sqrt":
        x = _sympy(args[0])
        if args[1] is None:
            return sympy.sqrt(x)
        n = _sympy(args[1])
        # \sqrt[3]{-8} = -2 (the real root), as in school maths; sympy's root() is the principal one
        return sympy.real_root(x, n) if x.is_negative and n.is_integer and n.is_odd else sympy.root(x, n)
    if kind == "func":
        name, arg, base = args
        if name == "log":  # \log without a base is base 10, as in MATH (AoPS); \ln is natural
            return sympy.log(_sympy(arg), 10 if base is None else _sympy(base))
        return getattr(sympy, _SYMPY_FUNCTIONS[name])(_sympy(arg))
    if kind == "abs":
        return sympy.Abs(_sympy(args[0]))
    if kind == "fact":
        return sympy.factorial(_sympy(args[0]))
    if kind == "binom":
        return sympy.binomial(_sympy(args[0]), _sympy(args[1]))
    raise TypeError(f"{kind} is not an expression")


# ---------------------------------------------------------------------------------------- CLI

def main() -> None:
    parser = ArgumentParser(description="Extract and normalise the final answer of a math solution.")
    parser.add_argument("text", help="a completion (or just an answer)")
    parser.add_argument("--gold", help="also say whether the answer is equivalent to this gold answer")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds sympy may take for the comparison")
    args = parser.parse_args()
    answer = extract_answer(args.text)
    same = equivalent(args.gold, answer, args.timeout) if args.gold is not None else None  # checks come first
    print(f"extracted:  {answer!r}")
    print(f"normalised: {normalize(answer) if answer is not None else None!r}")
    if same is not None:
        print(f"equivalent to {args.gold!r}: {same}")


if __name__ == "__main__":
    run(main)
