"""Train several methods one after another in this process, under torchrun or alone:
`python distributed_methods.py ROOT OUT [fsdp]` (ROOT holds model/ and data/ from train_helpers:
a tiny BERT for data parallel, a tiny LLaMA for fsdp).

Under torchrun every rank runs this; `peftlab.train.train` shares each step's global batch
between them (DDP, or FSDP2 with `fsdp`) and rank 0 writes OUT/<method>/. Used by
test_distributed.py and test_fsdp.py with 2 processes and with 1, to compare the adapters.
"""

import sys
from pathlib import Path

import torch

import peftlab
from peftlab.data import load_task
from peftlab.models import load_model
from peftlab.train import TrainConfig, train

METHODS = {
    "ia3": {},
    "prompt": {"num_virtual_tokens": 4},
    "lora+prompt": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ("query", "value")},
                    "prompt": {"num_virtual_tokens": 4}, "lr_scales": {"prompt": 10}},
}
SHARDED_METHODS = {  # on LLaMA: every kind of trainable tensor, inside the blocks and at the root
    "ia3": {},
    "adapters": {"bottleneck_size": 8},
    "prefix": {"num_virtual_tokens": 4},
    "prompt": {"num_virtual_tokens": 4},
    "full": {},
}


def main(root: Path, out: Path, fsdp: bool) -> None:
    task = load_task(str(root / "data"), max_dev=4)
    # 7 rows (3 + 4 per rank), 2 micro-batches per step: the item weighting matters.
    config = TrainConfig(learning_rate=1e-2, max_steps=3, batch_size=7, grad_accum=2, log_every=1, num_threads=1,
                         device="cpu", fsdp=fsdp)
    for method, fields in (SHARDED_METHODS if fsdp else METHODS).items():
        torch.manual_seed(0)
        loaded = load_model(str(root / "model"), "classification", num_labels=2)
        model = peftlab.apply(loaded.model, peftlab.make_config(method, **fields))
        train(model, task, loaded.tokenizer, config, out_dir=out / method, progress=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] == ["fsdp"])
