"""Training and evaluation: one loop for every method.

    config = TrainConfig(learning_rate=5e-4, epochs=3, batch_size=32, checkpoint_every=100)
    result = train(peft_model, task, tokenizer, config, out_dir="runs/lora")
    result.final_metrics      # {"loss": ..., "accuracy": ..., "macro_f1": ...}
    train(peft_model, task, tokenizer, config, out_dir="runs/lora", resume_from="runs/lora/checkpoints")
    evaluate(peft_model, task, tokenizer)

Under `torchrun --nproc_per_node=N` the same `train` call runs data-parallel (`train.distributed`).
"""

from peftlab.train.checkpoint import CheckpointError, find_checkpoint
from peftlab.train.config import TrainConfig
from peftlab.train.evaluate import evaluate
from peftlab.train.loop import train
from peftlab.train.records import TrainingDivergedError, TrainResult, TrainState
from peftlab.train.report import read_run, write_run
from peftlab.train.runtime import resolve_device

__all__ = [
    "CheckpointError", "TrainConfig", "TrainResult", "TrainState", "TrainingDivergedError", "evaluate",
    "find_checkpoint", "read_run", "resolve_device", "train", "write_run",
]
