"""The peer: a Hugging Face GPT-2 of the same shape trained with AdamW under `torch.compile`.

Run by compare_pytorch.py in its own interpreter (only torch and transformers are needed):

    python benchmarks/torch_gpt2_reference.py --layers 8 --d_model 512 --heads 16 --d_ff 2048 \
        --vocab 32000 --seq_len 512 --batch_size 8 --steps 4 [--eager] [--bf16]

Prints one JSON line: compile_s (first step), step_s (median of the timed steps), tokens_per_s,
params, and peak_gflops: torch's own best matmul rate on this machine in the run's precision
(2048^2 for 2 s, as train_throughput.py measures XLA's), so each side's MFU can be read against
its own BLAS. fp32 (or, with --bf16, fp32 master weights under torch.autocast("cpu", bfloat16):
torch's mixed precision, the peer of our ModelConfig.dtype="bfloat16"), no dropout, tied
embeddings, one fixed random batch: the same work as our benchmark.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time


def matmul_peak_gflops(torch, seconds: float = 2.0, n: int = 2048, dtype=None) -> float:
    """Returns the best n x n matmul rate torch reaches here in `dtype` (default fp32), GFLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    for name, default in (("layers", 8), ("d_model", 512), ("heads", 16), ("d_ff", 2048), ("vocab", 32000),
                          ("seq_len", 512), ("batch_size", 8), ("steps", 4)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--eager", action="store_true", help="skip torch.compile")
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (fp32 master weights)")
    args = p.parse_args()

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=args.vocab, n_positions=args.seq_len, n_embd=args.d_model, n_layer=args.layers,
                     n_head=args.heads, n_inner=args.d_ff, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(1, args.vocab, (args.batch_size, args.seq_len + 1))
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    if not args.eager:
        step = torch.compile(step)
    t = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    print(json.dumps({"impl": ("torch_eager" if args.eager else "torch_compile") + ("_bf16" if args.bf16 else ""),
                      "precision": "autocast_bf16" if args.bf16 else "fp32", "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "compile_s": compile_s, "step_s": step_s,
                      "step_s_all": times, "tokens_per_s": args.batch_size * args.seq_len / step_s,
                      "loss": float(loss), "params": sum(p.numel() for p in model.parameters()),
                      "peak_gflops": matmul_peak_gflops(torch, dtype=torch.bfloat16 if args.bf16 else None)}))


if __name__ == "__main__":
    main()
