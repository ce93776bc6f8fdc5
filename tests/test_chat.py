"""Chat prompts: a checkpoint's chat template rendered by chat.ChatTemplate equals transformers'
apply_chat_template (a test-only oracle; skipped without it), character for character and token
for token, for templates in the style of the families this project targets (ChatML with a
default system prompt as Qwen2.5, Qwen3's thinking switch, Llama 3.x's BOS and date header), with
and without a system prompt, with and without the generation prompt; the ChatML fallback; errors."""

import json

import pytest

from pretrained.chat import ChatTemplate, chatml, conversation
from pretrained.tokenizer import BPETokenizer

# Templates written for these tests in the style of the real ones (same constructs: namespace,
# reversed loops, string methods, trim_blocks / lstrip_blocks whitespace, raise_exception,
# strftime_now, tojson, {% generation %}).
QWEN25_STYLE = """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'system' and loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

QWEN3_STYLE = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(last_query=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- if message.role == 'user' and ns.last_query == messages|length - 1 %}
        {%- set ns.last_query = messages|length - 1 - loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set content = message.content %}
        {%- set reasoning = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning = message.reasoning_content %}
        {%- elif '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

LLAMA3_STYLE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception('Conversation roles must be user or assistant') }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# plain {% %} tags and literal newlines: what trim_blocks / lstrip_blocks change
PLAIN_TAGS = """{% for message in messages %}
  {% if message['role'] == 'user' %}
<|user|>
{{ message['content'] }}{{ eos_token }}
  {% elif message['role'] == 'assistant' %}
{% generation %}<|assistant|>
{{ message['content'] }}{{ eos_token }}{% endgeneration %}
  {% else %}
<|system|> {{ message | tojson }}
  {% endif %}
  {% if loop.last and add_generation_prompt %}
<|assistant|>
  {% endif %}
{% endfor %}"""

TEMPLATES = {"qwen25": QWEN25_STYLE, "qwen3": QWEN3_STYLE, "llama3": LLAMA3_STYLE, "plain": PLAIN_TAGS}
SYSTEM = "Reason step by step and put the final answer in \\boxed{}. Ünïcödé: 数学"
CONVERSATIONS = {
    "user only": [{"role": "user", "content": "What is 7 * 8?"}],
    "with system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 7 * 8?"}],
    "multi-turn": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 2 + 3?"},
                   {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n5"},
                   {"role": "user", "content": "  And 7 * 8?  "},
                   {"role": "assistant", "content": "56", "reasoning_content": "seven eights", "tool_calls": None}],
    "reasoning under another name": [{"role": "user", "content": "What is 7 * 8?"},
                                     {"role": "assistant", "content": "56", "reasoning": "seven eights"}],
}


def _checkpoint_tokenizer(tmp_path, template, layout: str = "jinja"):
    """A tokenizer directory saved by transformers (tokenizer.json trained by `tokenizers`) with
    `template`, stored as chat_template.jinja (what transformers 5 writes), inline in
    tokenizer_config.json (older checkpoints), or as a list of named templates."""
    transformers = pytest.importorskip("transformers")
    from test_tokenizer import _train
    _, path = _train(tmp_path, "qwen2")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<|begin_of_text|>",
                                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = template
    directory = tmp_path / "ckpt"
    tok.save_pretrained(str(directory))
    if layout != "jinja":
        (directory / "chat_template.jinja").unlink()
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = template if layout == "inline" else [{"name": "tool_use", "template": "x"},
                                                                       {"name": "default", "template": template}]
        config_path.write_text(json.dumps(config))
        tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    return tok, directory


@pytest.mark.parametrize("name", TEMPLATES)
def test_render_equals_apply_chat_template(tmp_path, name):
    ref, directory = _checkpoint_tokenizer(tmp_path, TEMPLATES[name])
    ours = ChatTemplate.from_dir(str(directory))
    bpe = BPETokenizer.from_file(str(directory / "tokenizer.json"))
    switches = [{}, {"enable_thinking": False}, {"enable_thinking": True}, {"date_string": "01 Jan 2026"}]
    for messages in CONVERSATIONS.values():
        for add_generation_prompt in (True, False):
            for kw in switches:
                want = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                               **kw)
                got = ours.render(messages, add_generation_prompt=add_generation_prompt, **kw)
                assert got == want, (name, messages, add_generation_prompt, kw)
                ids = ref.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                              **kw)
                ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
                assert bpe.encode(got) == list(ids)


def test_qwen3_thinking_switch_and_system_prompt(tmp_path):
    """The switch the issue names, by value: enable_thinking=False closes an empty think block."""
    _, directory = _checkpoint_tokenizer(tmp_path, QWEN3_STYLE)
    template = ChatTemplate.from_dir(str(directory))
    messages = conversation("What is 7 * 8?", system="Be brief.")
    assert template.render(messages) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 7 * 8?"
                                         "<|im_end|>\n<|im_start|>assistant\n")
    assert template.render(messages, enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert conversation("q") == [{"role": "user", "content": "q"}]


@pytest.mark.parametrize("layout", ["inline", "named"])
def test_template_stored_in_tokenizer_config(tmp_path, layout):
    ref, directory = _checkpoint_tokenizer(tmp_path, QWEN25_STYLE, layout)
    messages = CONVERSATIONS["user only"]
    assert ChatTemplate.from_dir(str(directory)).render(messages) == \
        ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_chatml_fallback_without_a_template(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    template = ChatTemplate.from_dir(str(tmp_path))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert template.render(messages) == chatml(messages) == want
    assert template.render(messages, add_generation_prompt=False) == want[: -len("<|im_start|>assistant\n")]
    with pytest.raises(ValueError, match="role"):
        chatml([{"role": "robot", "content": "x"}])


def test_errors_are_one_clear_value_error(tmp_path):
    _, directory = _checkpoint_tokenizer(tmp_path, LLAMA3_STYLE)
    template = ChatTemplate.from_dir(str(directory))
    with pytest.raises(ValueError, match="roles must be user or assistant"):  # the template's raise_exception
        template.render([{"role": "tool", "content": "x"}])
    for bad in ([], [{"content": "no role"}], "text"):
        with pytest.raises(ValueError, match="message"):
            template.render(bad)
    (directory / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }")
    with pytest.raises(ValueError, match="chat_template.jinja: not a valid Jinja template"):
        ChatTemplate.from_dir(str(directory))
    (directory / "chat_template.jinja").write_text("{{ ''.__class__.__mro__ }}")  # the sandbox holds
    with pytest.raises(ValueError, match="unsafe"):
        ChatTemplate.from_dir(str(directory)).render([{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="no such checkpoint directory"):
        ChatTemplate.from_dir(str(tmp_path / "missing"))


def test_command_line(tmp_path):
    """`python -m pretrained.chat DIR QUESTION --system ... --set enable_thinking=false` prints the rendered
    prompt; a bad directory is one line on stderr and exit status 2."""
    import os
    import subprocess
    import sys
    _, directory = _checkpoint_tokenizer(tmp_path, QWEN3_STYLE)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "pretrained.chat", str(directory), "What is 7 * 8?", "--system", "Be brief.",
                          "--set", "enable_thinking=false"], cwd=root, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    want = ChatTemplate.from_dir(str(directory)).render(conversation("What is 7 * 8?", "Be brief."), enable_thinking=False)
    assert run.stdout == want
    bad = subprocess.run([sys.executable, "-m", "pretrained.chat", str(tmp_path / "missing"), "q"], cwd=root, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no such checkpoint directory" in bad.stderr
