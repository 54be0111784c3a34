"""What the compare workers' allocator setting costs in step time, and what it saves in RSS.

With MALLOC_MMAP_THRESHOLD_=65536 glibc gives every block of 64 KiB and more back to the system
when it is freed, so a process's RSS follows its live tensors; fresh pages cost page faults, so
the step gets slower. `peftlab compare` ran its training workers so until this was measured (it
no longer does: BENCHMARKS.md, issue 17, for the whole-worker figures). This script
measures that in ONE process, interleaved: each round sets the threshold with mallopt (64 KiB,
then glibc's own dynamic behaviour approximated by its 32 MiB ceiling) and times a few training
steps of MiniLM with LoRA on a fixed batch, then reports the per-round ratio (geometric mean and
bootstrap 95% interval over rounds, `peftlab.compare.stats.ratio_interval`).

    python benchmarks/allocator_overhead.py [--rounds 12] [--steps 3] [--batch 16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
SETTINGS = {"mmap 64 KiB (compare workers)": 65536, "heap up to 32 MiB (glibc's ceiling)": 32 * 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    import peftlab
    from peftlab.compare.stats import ratio_interval
    from peftlab.models import load_model

    torch.set_num_threads(args.threads)
    libc = ctypes.CDLL("libc.so.6")
    torch.manual_seed(0)
    loaded = load_model("minilm", "classification", num_labels=2)
    model = peftlab.apply(loaded.model, peftlab.LoraConfig(r=16, alpha=32))
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-4)
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch, args.tokens)),
             "attention_mask": torch.ones(args.batch, args.tokens, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,))}
    model.train()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for round_index in range(args.rounds + 1):
        names = list(SETTINGS) if round_index % 2 == 0 else list(reversed(SETTINGS))
        for name in names:
            libc.mallopt(M_MMAP_THRESHOLD, SETTINGS[name])
            samples = []
            for _ in range(args.steps):
                start = time.perf_counter()
                model(**batch).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                samples.append(time.perf_counter() - start)
            if round_index:  # round 0 warms up
                times[name].append(statistics.median(samples))
    first, second = list(SETTINGS)
    ratio = ratio_interval(times[first], times[second])
    for name, values in times.items():
        print(f"{name}: median step {statistics.median(values) * 1000:.0f} ms over {len(values)} rounds")
    print(f"step time ratio {first} / {second}: {ratio.value:.3f} [{ratio.low:.3f}, {ratio.high:.3f}] "
          f"(load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
