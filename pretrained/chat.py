"""
Prompts for chat models: a conversation laid out as the checkpoint's own chat template lays it out.

An instruct model was fine-tuned on conversations written in one exact text format (role
markers, special tokens, newlines, a default system prompt, Qwen3's <think> block); a prompt in
any other layout is off the distribution it was trained on. A checkpoint ships that format as a
Jinja template: a `chat_template.jinja` file, or `chat_template` in `tokenizer_config.json`.
Rendering a template is not this project's concept, so `ChatTemplate` does not reimplement it:
it renders with `jinja2`, the engine transformers' `apply_chat_template` uses, set up the same way
(transformers 5, `utils/chat_template_utils.py`):
- a sandboxed, immutable environment (a template is code from the internet: it may not touch
  Python internals or mutate its inputs), with trim_blocks and lstrip_blocks on (the first
  newline after a tag and the whitespace before a tag are dropped) and the loop controls
  (`break`, `continue`);
- the helpers templates call: `raise_exception(msg)`, `strftime_now(fmt)` (today's date: Llama
  3.x templates print it unless `date_string` is given), a `tojson` that keeps non-ASCII text
  and does not escape HTML, a `namespace` without underscore names, and the `{% generation %}`
  block of training templates (rendered as its body);
- the variables: `messages` (keys whose value is None dropped; `reasoning_content`, `thinking`
  and `reasoning` filled from each other), `tools` and `documents` (None), `add_generation_prompt`,
  the tokenizer's special tokens (`bos_token`, `eos_token`, ... as strings) and any extra switch
  the caller passes (Qwen3's `enable_thinking`, Llama's `date_string`).
tests/test_chat.py checks the result against `apply_chat_template`, character for character.

A checkpoint without a template gets ChatML (`chatml`), the layout of Qwen instruct models.
Use (tokenize with add_special_tokens off, the default: the template writes its own special
tokens, e.g. Llama 3's <|begin_of_text|>; apply_chat_template does the same):

    template = ChatTemplate.from_dir(DIR)
    text = template.render(conversation(question, system="Reason step by step ..."), enable_thinking=False)
    ids = BPETokenizer.from_file(f"{DIR}/tokenizer.json").encode(text)

Run `python -m pretrained.chat DIR "What is 7 * 8?" [--system TEXT] [--set enable_thinking=false]` to print
the prompt a checkpoint's template makes.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tools.cli import ArgumentParser, read_json_object, run

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # one message field under three names


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    r"""A conversation in the ChatML format of Qwen instruct models, the fallback for a checkpoint
    without a template: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
    `<|im_start|>assistant\n` when `add_generation_prompt`."""
    for m in messages:
        if set(m) != {"role", "content"} or m["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"a message needs exactly 'role' (system/user/assistant) and 'content': {m!r}")
        if not isinstance(m["content"], str):
            raise ValueError(f"a message's content must be text: {m!r}")
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def conversation(question: str, system: str | None = None) -> list[dict[str, str]]:
    """The messages of a one-question prompt: [system (if given), user]."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]


# ---------------------------------------------------------------------------------------------
# the jinja2 environment of transformers' apply_chat_template


class GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (training templates mark the assistant's tokens
    with it): rendered as its body, which is what apply_chat_template does when it is not asked
    for the assistant mask."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


class SafeNamespace(jinja2.utils.Namespace):
    """jinja2's `namespace()`, refusing underscore names (they lead to Python internals)."""

    def __setitem__(self, name, value):
        _check_name(name)
        super().__setitem__(name, value)


def _check_name(name) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"a chat template may not set the namespace attribute {name!r}")


def _namespace(*args, **kwargs) -> SafeNamespace:
    attrs = dict(*args, **kwargs)
    for name in attrs:
        _check_name(name)
    return SafeNamespace(attrs)


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt),
                       namespace=_namespace)
    return env


# ---------------------------------------------------------------------------------------------


class ChatTemplate:
    """A checkpoint's chat template (or ChatML when `source` is None) and its special tokens."""

    def __init__(self, source: str | None, special_tokens: dict[str, str] | None = None, where: str = "chat template"):
        self.source, self.where = source, where
        self.special_tokens = dict(special_tokens or {})
        try:
            self.template = None if source is None else _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as e:
            raise ValueError(f"{where}: not a valid Jinja template (line {e.lineno}: {e.message})") from None

    def uses(self, name: str) -> bool:
        """Whether the template reads the variable `name` (e.g. Qwen3's `enable_thinking`), from its
        parsed source (jinja2.meta), not a substring search. ChatML reads none."""
        if self.source is None:
            return False
        return name in jinja2.meta.find_undeclared_variables(_environment().parse(self.source))

    @classmethod
    def from_dir(cls, directory: str) -> "ChatTemplate":
        """The template of a checkpoint directory, found where transformers looks: `chat_template.jinja`
        first, else `chat_template` in tokenizer_config.json (a string, or a list of named templates
        of which the one named "default" is used); ChatML when there is none. The special tokens
        come from tokenizer_config.json (a string or an {"content": ...} object each), and from
        special_tokens_map.json for an old config without `added_tokens_decoder` (transformers'
        legacy path). Raises ValueError for an unreadable file or a template that does not parse."""
        if not os.path.isdir(directory):
            raise ValueError(f"{directory}: no such checkpoint directory")
        config = _read_json(os.path.join(directory, "tokenizer_config.json")) or {}
        specials = {k: config.get(k) for k in SPECIAL_TOKENS if config.get(k) is not None}
        legacy = _read_json(os.path.join(directory, "special_tokens_map.json"))
        if legacy and "added_tokens_decoder" not in config:
            specials |= {k: v for k, v in legacy.items() if k in SPECIAL_TOKENS and v is not None}
        specials = {k: v.get("content") if isinstance(v, dict) else v for k, v in specials.items()}
        if not all(isinstance(v, str) for v in specials.values()):
            raise ValueError(f"{directory}/tokenizer_config.json: special tokens must be strings: {specials!r}")
        jinja_file = os.path.join(directory, "chat_template.jinja")
        if os.path.isfile(jinja_file):
            with open(jinja_file, encoding="utf-8") as f:
                return cls(f.read(), specials, jinja_file)
        source = config.get("chat_template")
        if isinstance(source, list):  # named templates: [{"name": ..., "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            if "default" not in named:
                raise ValueError(f"{directory}/tokenizer_config.json: chat_template names {sorted(named)} but no "
                                 "'default' one")
            source = named["default"]
        if source is not None and not isinstance(source, str):
            raise ValueError(f"{directory}/tokenizer_config.json: chat_template must be a string")
        return cls(source, specials, f"{directory}/tokenizer_config.json chat_template")

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **switches) -> str:
        """The prompt text of `messages` (a non-empty list of {"role": ..., "content": ...} dicts),
        as `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...,
        **switches)` renders it. `switches` are extra template variables (e.g. enable_thinking=False
        for Qwen3; date_string="26 Jul 2024" makes a Llama 3.x prompt independent of today's date);
        they override a special token of the same name. ChatML ignores them.

        Raises ValueError for malformed messages or when the template refuses the conversation
        (its raise_exception, e.g. roles that do not alternate).
        """
        if not isinstance(messages, list) or not messages:
            raise ValueError("a conversation needs at least one message")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ValueError(f"a message must be a dict with a 'role' string, got {m!r}")
        if self.template is None:
            return chatml(messages, add_generation_prompt)
        chat = []
        for m in messages:
            m = {k: v for k, v in m.items() if v is not None}
            reasoning = next((m[k] for k in REASONING_FIELDS if k in m), None)
            if reasoning is not None:
                m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
            chat.append(m)
        variables = self.special_tokens | switches
        try:
            return self.template.render(messages=chat, tools=None, documents=None,
                                        add_generation_prompt=add_generation_prompt, **variables)
        except jinja2.exceptions.TemplateError as e:
            raise ValueError(f"{self.where} refused the conversation: {e}") from None


def _read_json(path: str) -> dict | None:
    """The JSON object in `path`, None when there is no such file."""
    return read_json_object(path) if os.path.isfile(path) else None


def main() -> None:
    ap = ArgumentParser(description="Print the prompt a checkpoint's chat template makes of a question.")
    ap.add_argument("directory", help="checkpoint directory (tokenizer_config.json / chat_template.jinja)")
    ap.add_argument("question")
    ap.add_argument("--system", default=None, help="system prompt")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                    help="an extra template variable, e.g. enable_thinking=false (the value is JSON, else text)")
    args = ap.parse_args()
    switches = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"--set {item!r}: write NAME=VALUE")
        try:
            switches[name] = json.loads(value)
        except json.JSONDecodeError:
            switches[name] = value
    template = ChatTemplate.from_dir(args.directory)
    print(template.render(conversation(args.question, args.system), **switches), end="")


if __name__ == "__main__":
    run(main)
