"""Loading and resuming: no file runs code when it is loaded, a bad file is one ValueError line
naming it and saying what to do, and a resumed run neither loses nor repeats anything.

The crafted file: a pickle whose object, when unpickled, calls os.system to create a marker
file (what a malicious `--base` could do with a shell command). Every loading path of the
project must refuse it with a clear error, and the marker must never appear."""

import json
import os
import shlex
import sys

import pytest
import torch

import rlvr
import sft
from tools import trace_view
from pretrained.checkpoint import load_pt, save_pt
from decode import CotConfig, LBRConfig, TreeTrajectory
from evaluate import generate
from helpers import tiny_model
from model import ModelConfig
from rlvr import RLConfig, train_rl
from sft import SFTConfig, load_sft_model, train_sft
from tasks import get_task
from test_ddp import TwoTokenTask


class RunsCode:
    """Unpickling this runs `touch MARKER` in a shell."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


@pytest.fixture
def crafted(tmp_path):
    """write(path): a .pt shaped like a real checkpoint (so that only the loader can stop it)
    holding the code-running object; returns the marker path that object would create."""
    marker = str(tmp_path / "CODE_WAS_RUN")

    def write(path) -> None:
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
        torch.save({"model_config": {}, "state_dict": RunsCode(marker), "rl_config": {}, "step": 1,
                    "trajectory": RunsCode(marker), "rewards": torch.zeros(1)}, str(path))

    write.marker = marker
    return write


@pytest.fixture(scope="module")
def planning_base(tmp_path_factory) -> str:
    task = get_task("planning")
    path = str(tmp_path_factory.mktemp("base") / "base.pt")
    train_sft(task, ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=1, n_embd=16, max_seq_len=128),
              SFTConfig(steps=1, batch_size=2, eval_every=1, eval_size=2), path, torch.device("cpu"), quiet=True)
    return path


def cli_error(module, args: list[str], monkeypatch, capsys) -> str:
    """Run `python MODULE.py ARGS` in this process; the error it ends with (a ValueError, or the
    stderr of a non-zero exit)."""
    monkeypatch.setattr(sys, "argv", [module.__name__ + ".py"] + [str(a) for a in args])
    try:
        module.main()
    except ValueError as e:
        return str(e)
    except SystemExit as e:
        assert e.code not in (0, None)
        return capsys.readouterr().err
    raise AssertionError(f"{module.__name__} {args} did not fail")


def test_the_crafted_file_does_run_code_when_unpickled_unsafely(tmp_path, crafted):
    """The threat is real: plain unpickling of that file runs the command."""
    crafted(tmp_path / "x.pt")
    with open(tmp_path / "x.pt", "rb") as f:
        torch.load(f, weights_only=False)
    assert os.path.exists(crafted.marker)


LOADERS = {  # every path that reads a .pt: (module, arguments) with {evil}, {dir}, {base} filled in
    "rlvr --base": (rlvr, ["--task", "planning", "--base", "{evil}", "--method", "cot", "--out", "{dir}/run"]),
    "rlvr rl.pt in --out": (rlvr, ["--task", "planning", "--base", "{base}", "--method", "cot", "--steps", "1",
                                   "--prompts-per-step", "2", "--group-size", "2", "--out", "{dir}"]),
    "rlvr --eval-only rl.pt": (rlvr, ["--task", "planning", "--base", "{base}", "--method", "cot", "--eval-only",
                                      "--out", "{dir}"]),
    "sft resume": (sft, ["--task", "planning", "--steps", "1", "--out", "{evil}"]),
    "decode --base": (trace_view, ["--task", "planning", "--base", "{evil}"]),
    "decode --run": (trace_view, ["--task", "planning", "--base", "{base}", "--run", "{dir}"]),
    "decode --rollouts": (trace_view, ["--rollouts", "{evil}", "--task", "planning"]),
}


@pytest.mark.parametrize("name", LOADERS)
def test_every_loading_path_refuses_a_file_that_would_run_code(name, tmp_path, crafted, planning_base,
                                                               monkeypatch, capsys):
    module, args = LOADERS[name]
    run_dir, evil = tmp_path / "run_dir", tmp_path / "run_dir" / "rl.pt"
    crafted(evil)
    before = evil.read_bytes()
    args = [a.format(evil=evil, dir=run_dir, base=planning_base) for a in args]
    msg = cli_error(module, args, monkeypatch, capsys)
    assert not os.path.exists(crafted.marker)  # no code ran
    assert "could run code" in msg and str(evil) in msg and "\n" not in msg.strip()
    assert evil.read_bytes() == before  # and nothing was overwritten


def test_save_and_load_round_trip_dataclasses(tmp_path):
    """A trajectory (a dataclass holding a config dataclass and tensors) comes back equal; an
    unlisted dataclass is refused rather than returned as a dict."""
    model = tiny_model(vocab=4)
    router = rlvr.new_router(rlvr.RouterConfig(width=8), model.cfg.n_embd, 2, seed=0)
    traj = generate(model, router, [[0, 1]] * 3, LBRConfig(widths=(2, 1), max_new_tokens=3), 3,
                           torch.Generator().manual_seed(0))
    path = str(tmp_path / "r.pt")
    save_pt({"trajectory": traj, "step": 1}, path)
    back = load_pt(path, "rollouts", kinds=(TreeTrajectory, LBRConfig))["trajectory"]
    assert isinstance(back, TreeTrajectory) and back.cfg == traj.cfg and back.stop_ids == traj.stop_ids
    assert all(torch.equal(getattr(back, k), v) for k, v in vars(traj).items() if isinstance(v, torch.Tensor))
    with pytest.raises(ValueError, match="TreeTrajectory"):
        load_pt(path, "rollouts", kinds=(LBRConfig,))
    assert not os.path.exists(path + ".tmp")


def test_an_interrupted_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "rollouts.pt")
    save_pt({"step": 1}, path)

    def dies(obj, f):
        f.write(b"half a fi")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_pt({"step": 2}, path)
    monkeypatch.undo()
    assert load_pt(path, "rollouts") == {"step": 1} and not os.path.exists(path + ".tmp")


def _unwritable(kind: str, path, monkeypatch) -> None:
    """Make writing the file `path` fail as on a full disk (its temporary file is a link to
    /dev/full, which answers every write with ENOSPC) or in a read-only folder (its write bit
    cleared; root writes through that, so there the opening is refused as the OS would refuse it)."""
    if kind == "full disk":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        os.symlink("/dev/full", str(path) + ".tmp")
    elif os.geteuid() == 0:
        from pretrained import checkpoint

        def refused(name, *args, **kwargs):
            raise PermissionError(13, "Permission denied", name)
        monkeypatch.setattr(checkpoint, "open", refused, raising=False)
    else:
        path.parent.chmod(0o500)


@pytest.mark.parametrize("kind", ["full disk", "read-only folder"])
def test_a_failed_write_is_one_line_and_leaves_nothing_behind(kind, tmp_path, monkeypatch, capsys):
    """torch.save's error on a full disk or a read-only folder used to escape cli.run as a traceback
    and leave the temporary file: now save_pt removes it and keeps the old file, and sft.py ends
    with one line and status 2."""
    from tools.cli import run
    folder = tmp_path / "out"
    folder.mkdir()
    old, new = folder / "b.pt", folder / "c.pt"
    save_pt({"step": 1}, str(old))
    before = old.read_bytes()
    _unwritable(kind, old, monkeypatch)
    try:
        with pytest.raises(OSError, match=f"^cannot write {old} \\(.*\\): .*; {old} was left as it was$"):
            save_pt({"step": 2}, str(old))
        assert os.listdir(folder) == ["b.pt"] and old.read_bytes() == before
        if kind == "full disk":
            _unwritable(kind, new, monkeypatch)
        monkeypatch.setattr(sft, "check_out_file", lambda *a: None)  # its up-front check would refuse sooner
        monkeypatch.setattr(sys, "argv", ["sft.py", "--steps", "1", "--batch-size", "2", "--eval-size", "2",
                                          "--n-layer", "1", "--n-embd", "16", "--out", str(new)])
        with pytest.raises(SystemExit) as e:
            run(sft.main)
        err = capsys.readouterr().err
        line = err.strip().split("\n")[-1]  # the last: the lines before it are the progress bar's
        assert e.value.code == 2 and "Traceback" not in err
        assert line.startswith(f"sft.py: error: cannot write {new} (")
        assert os.listdir(folder) == ["b.pt"]
    finally:
        folder.chmod(0o700)


def test_an_unwritable_out_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    """A read-only --out folder is refused up front, not at the first checkpoint (root may write
    anywhere, so there the folder is reported unwritable by os.access)."""
    from tools.cli import check_out_file
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", lambda p, mode: os.path.abspath(p) != str(folder))
    else:
        folder.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=f"--out {folder}/sub/b.pt: {folder} is not writable"):
            check_out_file(str(folder / "sub" / "b.pt"), "--out")
    finally:
        folder.chmod(0o700)


def test_sft_stops_at_a_non_finite_loss_and_keeps_the_last_good_checkpoint(tmp_path):
    """A learning rate far too high: step 1 moves the weights to ~1e30, step 2's loss is NaN. It
    ends with one line naming what to lower, before the bad step's update, and the checkpoint on
    disk is step 1's."""
    task = get_task("planning")
    path = str(tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"^step 2: the loss is nan \(not finite\): lower --lr") as e:
        train_sft(task, ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=1, n_embd=16, max_seq_len=128),
                  SFTConfig(steps=4, batch_size=2, eval_every=1, eval_size=2, lr=1e30, warmup=0), path,
                  torch.device("cpu"), quiet=True)
    assert "\n" not in str(e.value)
    ckpt = load_pt(path, "SFT checkpoint")
    assert ckpt["step"] == 1 and [h["step"] for h in ckpt["history"]] == [1]
    assert sorted(os.listdir(tmp_path)) == ["b.pt"]


def test_resume_refuses_a_base_of_another_shape(tmp_path):
    """An RL run resumed from a --base of another width used to end in load_state_dict's traceback;
    it is refused naming the first tensor whose shape differs, and rl.pt is left as it was."""
    task, dec, cfg = TwoTokenTask(), CotConfig(max_new_tokens=3), RLConfig(steps=2, prompts_per_step=2, group_size=2)
    train_rl(tiny_model(vocab=4, n_embd=16), None, task, dec, RLConfig(steps=1, prompts_per_step=2, group_size=2),
             str(tmp_path), quiet=True)
    before = (tmp_path / "rl.pt").read_bytes()
    with pytest.raises(ValueError, match=r"rl\.pt was trained from a model of another shape than the --base .*"
                                         r"tensor 'embed_tokens\.weight': shape \(4, 16\) there, shape \(4, 32\) in "
                                         r"the model now; give the one this run started from, or choose another --out"):
        train_rl(tiny_model(vocab=4, n_embd=32), None, task, dec, cfg, str(tmp_path), quiet=True)
    assert (tmp_path / "rl.pt").read_bytes() == before


def bad_files(tmp_path) -> dict:
    good = tmp_path / "good.pt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    files = {"missing": tmp_path / "nope.pt", "directory": tmp_path}
    for name, content in [("empty", b""), ("truncated", data[: len(data) // 2]),
                          ("garbage", b"not a checkpoint " * 20)]:
        (tmp_path / f"{name}.pt").write_bytes(content)
        files[name] = tmp_path / f"{name}.pt"
    torch.save([1, 2], tmp_path / "list.pt")
    files["not a dict"] = tmp_path / "list.pt"
    return files


@pytest.mark.parametrize("kind,expected", [("missing", "no such file"), ("directory", "is a directory"),
                                           ("empty", "not a readable checkpoint"),
                                           ("truncated", "not a readable checkpoint"),
                                           ("garbage", "not a"), ("not a dict", "holds a list")])
def test_a_bad_base_checkpoint_is_one_clear_line(tmp_path, kind, expected):
    path = str(bad_files(tmp_path)[kind])
    with pytest.raises(ValueError, match=expected) as e:
        load_sft_model(path)
    assert path in str(e.value) and "\n" not in str(e.value)


def test_an_rl_checkpoint_given_as_base_says_so(tmp_path, planning_base):
    task = get_task("planning")
    model = load_sft_model(planning_base, task=task)
    train_rl(model, None, task, CotConfig(max_new_tokens=task.max_answer_len),
             RLConfig(steps=1, prompts_per_step=2, group_size=2), str(tmp_path), quiet=True)
    with pytest.raises(ValueError, match="RL checkpoint.*--out.*--eval-only"):
        load_sft_model(str(tmp_path / "rl.pt"), task=task)


def test_a_base_of_another_task_is_refused(planning_base, tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="'planning' task.*--task math"):
        load_sft_model(planning_base, task=get_task("math"))
    msg = cli_error(rlvr, ["--task", "math", "--base", planning_base, "--method", "cot", "--out", tmp_path / "r"],
                    monkeypatch, capsys)
    assert "vocabulary" in msg and not os.path.exists(tmp_path / "r" / "rl.pt")


def test_sft_resume_with_other_flags_names_them(tmp_path, monkeypatch, capsys):
    out = tmp_path / "base.pt"
    flags = ["--task", "planning", "--steps", "1", "--batch-size", "2", "--eval-size", "2", "--n-layer", "1",
             "--n-embd", "16", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["sft.py"] + flags)
    sft.main()
    before = out.read_bytes()
    msg = cli_error(sft, flags + ["--lr", "0.01", "--n-embd", "32"], monkeypatch, capsys)
    assert "--lr 0.006 there, 0.01 now" in msg and "--n-embd 16 there, 32 now" in msg and "--steps" not in msg
    assert out.read_bytes() == before
    monkeypatch.setattr(sys, "argv", ["sft.py"] + flags)
    sft.main()  # the same flags: the finished checkpoint loads


class DiesAtStep4(TwoTokenTask):
    """Raises (like a kill) when step 4 asks for its prompts (2 prompts per step)."""

    def __init__(self):
        self.calls = 0

    def sample(self, rng, split="train"):
        self.calls += 1
        if self.calls > 6:
            raise KeyboardInterrupt
        return super().sample(rng, split)


def test_resume_after_a_kill_keeps_one_metrics_row_per_step(tmp_path):
    """Killed during step 4, with checkpoints every 2 steps: metrics.jsonl had rows 1-3 and rl.pt
    step 2. The resumed run rewrites the file to the checkpoint's rows and goes on: rows 1-4,
    each once, equal to an uninterrupted run's."""
    cfg = RLConfig(steps=4, prompts_per_step=2, group_size=3, save_every=2)
    dec = LBRConfig(widths=(2, 1), max_new_tokens=3)

    def run(out, task):
        model = tiny_model(vocab=4)
        router = rlvr.new_router(rlvr.RouterConfig(width=8), model.cfg.n_embd, 2, seed=0)
        return train_rl(model, router, task, dec, cfg, str(out), quiet=True)

    def rows(out):
        with open(out / "metrics.jsonl") as f:
            return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in f]

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", DiesAtStep4())
    assert [r["step"] for r in rows(tmp_path / "killed")] == [1, 2, 3]
    assert load_pt(str(tmp_path / "killed" / "rl.pt"), "rl")["step"] == 2
    run(tmp_path / "killed", TwoTokenTask())
    run(tmp_path / "straight", TwoTokenTask())
    assert [r["step"] for r in rows(tmp_path / "killed")] == [1, 2, 3, 4]
    assert rows(tmp_path / "killed") == rows(tmp_path / "straight")


def test_a_run_directory_refuses_another_starting_model(planning_base, tmp_path, monkeypatch, capsys):
    """A finished run resumed or evaluated with another --base (or --model / --data) used to load the
    run's weights silently and report them under the new name; source.json now records the inputs."""
    other = str(tmp_path / "other_base.pt")
    save_pt(load_pt(planning_base, "base"), other)  # same weights, another file: another input
    out = tmp_path / "run"
    common = ["--task", "planning", "--method", "cot", "--steps", "1", "--prompts-per-step", "2", "--group-size",
              "2", "--eval-size", "2", "--eval-samples", "1", "--out", out]
    monkeypatch.setattr(sys, "argv", ["rlvr.py", "--base", planning_base] + [str(a) for a in common])
    rlvr.main()
    source = json.loads((out / "source.json").read_text())
    assert source["base"] == os.path.abspath(planning_base) and source["task"] == "planning"
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    for extra in ([], ["--eval-only"]):
        msg = cli_error(rlvr, ["--base", other] + common + extra, monkeypatch, capsys)
        assert "made from other inputs" in msg and "--base" in msg
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before  # nothing written
