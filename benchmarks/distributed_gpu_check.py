"""The NCCL/CUDA paths of issue 19, for a machine with 2+ GPUs (not run on this CPU-only machine).

    .venv/bin/python benchmarks/distributed_gpu_check.py --gpus 2 --work /tmp/gpu-check

Trains the tiny 4-block LLaMA of the tests with LoRA and QLoRA three ways on CUDA: one process,
`torchrun --nproc_per_node=N` data-parallel (DDP over NCCL) and the same with `--fsdp` (FSDP2 over
NCCL), then prints the largest difference of each adapter from the one-process adapter and the
per-rank share of the blocks' bytes the sharded runs report. Expect differences around 1e-5
(float summation order differs between one and N devices) and shares of 1/N.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "train"))

from train_helpers import write_tiny_llama, write_toy_data  # noqa: E402  (after the path is set)


def train(work: Path, out: Path, method: str, launch: list[str], extra: list[str]) -> str:
    args = ["train", "--model", str(work / "model"), "--data", str(work / "data"), "--out", str(out),
            "--method", method, "--rank", "4", "--alpha", "8", "--targets", "q_proj,v_proj", "--dropout", "0",
            "--lr", "1e-2", "--steps", "3", "--batch-size", "8", "--grad-accum", "2", "--device", "cuda",
            "--no-progress", "--max-dev", "8", *(["--set", "block_size=32"] * (method == "qlora")), *extra]
    done = subprocess.run([*launch, "-m", "peftlab", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"{method} {' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-check"))
    args = parser.parse_args()
    from safetensors.torch import load_file

    write_tiny_llama(args.work / "model")
    write_toy_data(args.work / "data", train=48, dev=8)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.gpus}"]
    for method in ("lora", "qlora"):
        train(args.work, args.work / f"{method}-one", method, [sys.executable], [])
        expected = load_file(str(args.work / f"{method}-one" / "adapter_model.safetensors"))
        for name, extra in (("ddp", []), ("fsdp", ["--fsdp"])):
            stdout = train(args.work, args.work / f"{method}-{name}", method, torchrun, extra)
            got = load_file(str(args.work / f"{method}-{name}" / "adapter_model.safetensors"))
            worst = max((got[key] - expected[key]).abs().max().item() for key in expected)
            shares = next((line for line in stdout.splitlines() if line.startswith("fsdp:")), "")
            print(f"{method} {name}: max |adapter - one process| = {worst:.2e} {shares}")


if __name__ == "__main__":
    main()
