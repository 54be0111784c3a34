"""Training and evaluation: one loop for every method.

    config = TrainConfig(learning_rate=5e-4, epochs=3, batch_size=32)
    result = train(peft_model, task, tokenizer, config, out_dir="runs/lora")
    result.final_metrics      # {"loss": ..., "accuracy": ..., "macro_f1": ...}
    evaluate(peft_model, task, tokenizer)
"""

from peftlab.train.config import TrainConfig
from peftlab.train.evaluate import evaluate
from peftlab.train.loop import TrainingDivergedError, TrainResult, TrainState, resolve_device, train
from peftlab.train.report import read_run, write_run

__all__ = [
    "TrainConfig", "TrainResult", "TrainState", "TrainingDivergedError", "evaluate", "read_run",
    "resolve_device", "train", "write_run",
]
