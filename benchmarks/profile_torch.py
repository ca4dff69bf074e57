"""Where a scalegmn.torch training step spends its time: torch.profiler's operator table.

Usage: `python benchmarks/profile_torch.py --config mnist-inr-fwd --threads 2 [--steps 3] [--rows 15]`.
Same model, batch and loss as `bench_torch.py`; prints the operators by self CPU time.
"""

from __future__ import annotations

import argparse

from bench_torch import CONFIGS, build


def main(argv: list[str] | None = None) -> None:
    """Profile a few training steps (after one warm-up step) and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="mnist-inr-fwd", choices=list(CONFIGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=15)
    a = p.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(a.threads)
    model, batch, loss_fn = build(a.config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(batch)).backward()
        opt.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    print(f"{a.config}, {a.threads} thread(s), {a.steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
