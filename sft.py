"""
Supervised pre-training of the base model on task data (teacher forcing, loss on the answer only).

Fresh examples every step (the tasks are generators), AdamW with warm-up and cosine decay,
periodic evaluation of the task's health checks, and a checkpoint that resumes where it left
off. The health checks are printed and saved with the checkpoint, because every experiment on
top of this model is only meaningful if they pass (docs/DESIGN.md §7.2, §7.3).

Run:
    python sft.py --task planning --out out/planning_s0.pt --seed 0
    python sft.py --task math --out out/math_s0.pt --seed 0
    python sft.py --task planning --steps 200 --out /tmp/x.pt     (a quick try)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pretrained.checkpoint import load_pt, save_pt
from tools.cli import ArgumentParser, check_device, check_fits, check_float, check_int, check_out_file, run
from evaluate import greedy_completions
from model import ModelConfig, Transformer, autocast
from tools.distributed import pick_device
from tasks import get_task
from tasks.common import Seeds, make_examples, pack


@dataclass
class SFTConfig:
    steps: int = 3500  # optimizer steps
    batch_size: int = 64  # examples per step (fresh each step)
    lr: float = 6e-3  # peak learning rate (high: it shortens the plateau before lookups are learned)
    warmup: int = 100  # linear warm-up steps
    min_lr_frac: float = 0.3  # cosine decays to lr * min_lr_frac
    weight_decay: float = 0.1  # AdamW weight decay on matrices
    grad_clip: float = 1.0  # max gradient norm
    eval_every: int = 500  # steps between health evaluations
    eval_size: int = 512  # evaluation examples
    seed: int = 0  # model init and data

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_size"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup", self.warmup, 0)
        for name in ("lr", "grad_clip"):
            check_float(name, getattr(self, name))
        check_float("weight_decay", self.weight_decay, strict=False)
        check_float("min_lr_frac", self.min_lr_frac, strict=False)
        if self.min_lr_frac > 1:
            raise ValueError(f"min_lr_frac={self.min_lr_frac}: the cosine ends at lr * min_lr_frac, a share in [0, 1]")


def lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]
    no_decay = [p for p in model.parameters() if p.dim() < 2 and p.requires_grad]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def sft_loss(model: Transformer, examples) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens given the prompt."""
    device = model.embed_tokens.weight.device
    seq, predicts_answer, _ = pack(examples, device)
    with autocast(device):
        h = model.hidden(seq[:, :-1])
    logits = model.head(h[predicts_answer[:, :-1]])  # (n_answer_tokens, V) fp32
    return F.cross_entropy(logits, seq[:, 1:][predicts_answer[:, :-1]])


def training_bytes(model_cfg: ModelConfig) -> int:
    """A lower bound of the memory that pre-training a model of `model_cfg` takes: its fp32 weights,
    their gradients and AdamW's two moments, 16 bytes per parameter (activations come on top)."""
    with torch.device("meta"):  # the parameter count without allocating the parameters
        return 16 * Transformer(model_cfg).num_params()


def load_sft_model(path: str, device: torch.device | str = "cpu", task=None) -> Transformer:
    """The model of a checkpoint written by train_sft (what `--base` names), in eval mode. With
    `task`, the checkpoint must be a model of that task (same name and vocabulary size).

    Raises ValueError naming the file and what to do: not a loadable file (checkpoint.load_pt),
    an RL checkpoint or another file instead of a base model, a model of another task.
    """
    ckpt = load_pt(path, "--base checkpoint")
    if "rl_config" in ckpt:
        raise ValueError(f"--base {path} is an RL checkpoint (rlvr.py's rl.pt), not a pre-trained base model: "
                         "to resume or evaluate that run give its directory as --out (add --eval-only to only "
                         "evaluate it) and, as --base, the sft.py checkpoint it started from")
    if not {"model_config", "state_dict"} <= set(ckpt):
        raise ValueError(f"--base {path} is not a base model checkpoint (write one with sft.py)")
    vocab = ckpt["model_config"].get("vocab_size")
    if task is not None and (ckpt.get("task") != task.name or vocab != task.tokenizer.vocab_size):
        raise ValueError(f"--base {path} is a model of the {ckpt.get('task')!r} task ({vocab} tokens), not of "
                         f"--task {task.name} (a vocabulary of {task.tokenizer.vocab_size} tokens): pre-train one "
                         f"with `python sft.py --task {task.name} --out ...`")
    try:
        model = Transformer(ModelConfig(**ckpt["model_config"])).to(device)
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError) as e:  # config fields or tensor shapes that do not fit
        raise ValueError(f"--base {path}: its weights do not fit its model config ({str(e).splitlines()[0]})") from None
    return model.eval()


# the command-line flag of each setting a checkpoint records (settings without a flag keep their field name)
MODEL_FLAGS, TASK_FLAGS = ("n_layer", "n_embd"), ("arm_len", "n_arms", "drill_frac")


def settings_diff(saved: dict, now: dict) -> list[str]:
    """'--flag X there, Y now' for every setting that differs between a checkpoint and this run;
    `saved` and `now` map each section (task, model_config, sft_config, task_config) to its value."""
    out = []
    for section in now:
        a, b = saved.get(section), now[section]
        pairs = [(section, a, b)] if not isinstance(b, dict) else [
            (name, (a or {}).get(name, "(absent)"), b.get(name, "(absent)")) for name in {**(a or {}), **b}]
        for name, old, new in pairs:
            if old != new:
                flagged = (section in ("task", "sft_config") or (section == "model_config" and name in MODEL_FLAGS)
                           or (section == "task_config" and name in TASK_FLAGS))
                label = "--" + name.replace("_", "-") if flagged else f"{section}.{name}"
                out.append(f"{label} {old} there, {new} now")
    return out


@dataclass
class HealthCheck:
    key: str  # the number of `task.health` it reads
    value: float  # that number
    want: str  # the threshold, e.g. ">= 0.99"
    passed: bool
    why: str  # what a failure means for the experiment


def health_checks(health: dict[str, float]) -> list[HealthCheck]:
    """The pass/fail gate of a pre-trained base model (docs/DESIGN.md §7.2), applied to the numbers of
    `task.health`: the planning experiment is only meaningful on a model that follows edges but
    cannot plan by itself, so
      (1) tf_acc_rest >= 0.99: teacher-forced accuracy after the first answer token (it follows edges);
      (2) first_is_child >= 0.99: the first answer token is a child of s (it starts on some arm);
      (3) first_acc_j{j} <= 2 / n_arms for every target depth j >= 2 (chance is 1 / n_arms; far
          above it the model plans alone and the task is too easy; j = 1 is a one-edge lookup).
    The one definition of "healthy": sft.py prints it, experiments/synthetic.py's report marks each seed with it.
    A task whose health has none of these numbers (math: greedy accuracy per number of operations,
    which describes how much room RL has rather than gating it) gets an empty list."""
    checks = [HealthCheck(key, health[key], ">= 0.99", health[key] >= 0.99, why)
              for key, why in [("tf_acc_rest", "it does not follow edges yet: train longer"),
                               ("first_is_child", "its first token is not on an arm: train longer")]
              if key in health]
    depths = sorted(int(k[len("first_acc_j"):]) for k in health if k.startswith("first_acc_j"))
    for j in [j for j in depths if j >= 2]:
        key, limit = f"first_acc_j{j}", 2 * health["chance"]
        checks.append(HealthCheck(key, health[key], f"<= {limit:.3f} (2 / n_arms)", health[key] <= limit,
                                  "it picks the right arm without a lookahead: the task is too easy for it"))
    return checks


def health_report(health: dict[str, float], task_name: str) -> str:
    """One line per check of `health_checks` (pass or FAIL, value, threshold) and the verdict."""
    checks = health_checks(health)
    if not checks:
        return (f"the {task_name} task has no pass/fail health checks: its numbers say how much room RL has "
                "(greedy accuracy well below Pass@n on the RL difficulties; docs/DESIGN.md §7.3)")
    lines = ["health checks (docs/DESIGN.md §7.2):"]
    lines += [f"  {'pass' if c.passed else 'FAIL'}  {c.key} = {c.value:.3f}, want {c.want}"
              + ("" if c.passed else f": {c.why}") for c in checks]
    ok = all(c.passed for c in checks)
    lines.append("healthy: " + ("yes, a valid base model for the experiments" if ok else
                                "NO: experiments on this model do not measure what they are meant to"))
    return "\n".join(lines)


def train_sft(task, model_cfg: ModelConfig, cfg: SFTConfig, out_path: str, device: torch.device,
              quiet: bool = False) -> tuple[Transformer, dict]:
    """Train (or resume, or just load if finished) and return the model and its checkpoint dict."""
    with torch.random.fork_rng(devices=[]):  # the init depends on the seed alone; the global RNG is left as it was
        torch.manual_seed(cfg.seed)  # data comes from seeded generators
        model = Transformer(model_cfg).to(device)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    start, history = 0, []
    if os.path.exists(out_path):
        ckpt = load_pt(out_path, "SFT checkpoint")
        if "sft_config" not in ckpt:
            raise ValueError(f"{out_path} exists and is not an sft.py checkpoint; choose another --out")
        now = {"task": task.name, "model_config": asdict(model_cfg), "sft_config": asdict(cfg),
               "task_config": asdict(task.cfg)}
        saved = dict(ckpt)
        try:  # model fields added since the checkpoint was written take their defaults (the old behaviour)
            saved["model_config"] = asdict(ModelConfig(**ckpt["model_config"]))
        except (TypeError, ValueError):
            pass  # unknown fields: settings_diff names them
        diff = settings_diff(saved, now)
        if diff:
            raise ValueError(f"{out_path} was trained with other settings ({'; '.join(diff)}): give the same "
                             "flags to resume it, or choose another --out (or delete it) to train anew")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        start, history = ckpt["step"], ckpt["history"]
        if start >= cfg.steps:
            return model.eval(), ckpt
    eval_set = make_examples(task, cfg.eval_size, seed=Seeds(cfg.seed).eval_examples, split="eval")

    def save(step: int) -> dict:
        ckpt = {"model_config": asdict(model_cfg), "sft_config": asdict(cfg), "task": task.name,
                "task_config": asdict(task.cfg), "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "history": history, "health": history[-1]["health"] if history else {}}
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        save_pt(ckpt, out_path)  # via a temporary file: never a half-written checkpoint
        return ckpt

    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), desc=f"sft {task.name} seed {cfg.seed}", disable=quiet, initial=start,
               total=cfg.steps)
    ckpt = None
    for step in bar:
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = sft_loss(model, make_examples(task, cfg.batch_size, seed=Seeds(cfg.seed).train_step(step), split="train"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        for what, value in (("loss", loss.item()), ("gradient norm", grad_norm)):
            if not math.isfinite(value):  # checked before the step, so the weights and checkpoint stay good
                raise ValueError(f"step {step + 1}: the {what} is {value} (not finite): lower --lr (or raise "
                                 "--warmup), and start a new --out")
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            model.eval()
            health = task.health(model, eval_set, greedy_completions)
            history.append({"step": step + 1, "loss": loss.item(), "health": health, "seconds": time.time() - t0})
            if not quiet:
                checks = health_checks(health)
                passed = f" ({sum(c.passed for c in checks)}/{len(checks)} health checks pass)" if checks else ""
                tqdm.write(f"step {step + 1}: loss {loss.item():.4f} "
                           + json.dumps({k: round(v, 4) for k, v in health.items()}) + passed)
            ckpt = save(step + 1)
    return model.eval(), ckpt


def main() -> None:
    ap = ArgumentParser(description="Supervised pre-training of the base model on a task.")
    g = ap.add_argument_group("task")
    g.add_argument("--task", default="planning", choices=["planning", "math"])
    g.add_argument("--arm-len", type=int, default=4, help="planning: nodes per arm (L)")
    g.add_argument("--n-arms", type=int, default=4, help="planning: arms per centre (D)")
    g.add_argument("--drill-frac", type=float, default=0.5, help="planning: share of lookup-drill training examples")
    g = ap.add_argument_group("model")
    g.add_argument("--n-layer", type=int, default=2)
    g.add_argument("--n-embd", type=int, default=64)
    g = ap.add_argument_group("training")
    for f_name, f_default in asdict(SFTConfig()).items():
        g.add_argument("--" + f_name.replace("_", "-"), type=type(f_default), default=f_default)
    ap.add_argument("--out", required=True, help="checkpoint path (resumed if it exists)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    check_device(args.device)
    check_int("--threads", args.threads, 0, "0: torch's default")
    check_int("--n-layer", args.n_layer, 1)
    check_int("--n-embd", args.n_embd, 8, "a multiple of 8: 4 heads of an even head_dim")
    check_float("--drill-frac", args.drill_frac, strict=False)
    if args.drill_frac > 1:
        raise ValueError(f"--drill-frac {args.drill_frac}: a share of the training examples, in [0, 1]")
    check_out_file(args.out, "--out")
    if args.threads:
        torch.set_num_threads(args.threads)
    knobs = dict(arm_len=args.arm_len, n_arms=args.n_arms, drill_frac=args.drill_frac) if args.task == "planning" else {}
    task = get_task(args.task, **knobs)
    model_cfg = ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=args.n_layer, n_embd=args.n_embd, max_seq_len=256)
    cfg = SFTConfig(**{k: getattr(args, k) for k in asdict(SFTConfig())})
    device, need = pick_device(args.device), training_bytes(model_cfg)
    check_fits(f"--n-layer {args.n_layer} --n-embd {args.n_embd} (a model of {need // 16:,} parameters, trained "
               "with AdamW)", need, device, hint="give a smaller --n-embd or --n-layer")
    _, ckpt = train_sft(task, model_cfg, cfg, args.out, device)
    print(f"health after {ckpt['step']} steps ({cfg.eval_size} evaluation problems):")
    print(json.dumps(ckpt["health"], indent=1))
    print(health_report(ckpt["health"], task.name))


if __name__ == "__main__":
    run(main)
