"""
Supervised pre-training of the base model on task data (teacher forcing, loss on the answer only).

Fresh examples every step (the tasks are generators), AdamW with warm-up and cosine decay,
periodic evaluation of the task's health checks, and a checkpoint that resumes where it left
off. The health checks are printed and saved with the checkpoint, because every experiment on
top of this model is only meaningful if they pass (DESIGN §6.1).

Run:
    python sft.py --task planning --out out/planning_s0.pt --seed 0
    python sft.py --task math --out out/math_s0.pt --seed 0
    python sft.py --task planning --steps 200 --out /tmp/x.pt     (a quick try)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import ModelConfig, Transformer, autocast, pick_device
from tasks import get_task
from tasks.common import make_examples, pack


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


def load_sft_model(path: str, device: torch.device | str = "cpu") -> Transformer:
    """The model of a checkpoint written by train_sft."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    model = Transformer(ModelConfig(**ckpt["model_config"])).to(device)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def train_sft(task, model_cfg: ModelConfig, cfg: SFTConfig, out_path: str, device: torch.device,
              quiet: bool = False) -> tuple[Transformer, dict]:
    """Train (or resume, or just load if finished) and return the model and its checkpoint dict."""
    torch.manual_seed(cfg.seed)  # weight init; data comes from seeded generators
    model = Transformer(model_cfg).to(device)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    start, history = 0, []
    if os.path.exists(out_path):
        ckpt = torch.load(out_path, map_location=device, weights_only=False)
        if (ckpt["model_config"], ckpt["sft_config"], ckpt["task_config"]) != (asdict(model_cfg), asdict(cfg), asdict(task.cfg)):
            raise ValueError(f"{out_path} was trained with other settings; delete it or choose another --out")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        start, history = ckpt["step"], ckpt["history"]
        if start >= cfg.steps:
            return model.eval(), ckpt
    eval_set = make_examples(task, cfg.eval_size, seed=10_000 + cfg.seed, split="eval")

    def save(step: int) -> dict:
        ckpt = {"model_config": asdict(model_cfg), "sft_config": asdict(cfg), "task": task.name,
                "task_config": asdict(task.cfg), "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "history": history, "health": history[-1]["health"] if history else {}}
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        torch.save(ckpt, out_path + ".tmp")
        os.replace(out_path + ".tmp", out_path)  # never leave a half-written checkpoint
        return ckpt

    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), desc=f"sft {task.name} seed {cfg.seed}", disable=quiet, initial=start,
               total=cfg.steps)
    ckpt = None
    for step in bar:
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = sft_loss(model, make_examples(task, cfg.batch_size, seed=cfg.seed * 1_000_003 + step, split="train"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            model.eval()
            health = task.health(model, eval_set)
            history.append({"step": step + 1, "loss": loss.item(), "health": health, "seconds": time.time() - t0})
            if not quiet:
                tqdm.write(f"step {step + 1}: loss {loss.item():.4f} " + json.dumps({k: round(v, 4) for k, v in health.items()}))
            ckpt = save(step + 1)
    return model.eval(), ckpt


def main() -> None:
    ap = argparse.ArgumentParser(description="Supervised pre-training of the base model on a task.")
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
    if args.threads:
        torch.set_num_threads(args.threads)
    knobs = dict(arm_len=args.arm_len, n_arms=args.n_arms, drill_frac=args.drill_frac) if args.task == "planning" else {}
    task = get_task(args.task, **knobs)
    model_cfg = ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=args.n_layer, n_embd=args.n_embd, max_seq_len=256)
    cfg = SFTConfig(**{k: getattr(args, k) for k in asdict(SFTConfig())})
    _, ckpt = train_sft(task, model_cfg, cfg, args.out, pick_device(args.device))
    print(json.dumps(ckpt["health"], indent=1))


if __name__ == "__main__":
    main()
