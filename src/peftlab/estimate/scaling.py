"""Scaling table: full fine-tuning vs LoRA vs QLoRA memory across model sizes, one rule.

Why: source 003's scaling table mixes precisions (see `seeds.SEED_003_SCALING`); this one applies
the detailed memory model to real shapes (1B: LLaMA-3.2-1B, then LLaMA-2 7B/13B/70B), all in
bf16 mixed precision with AdamW, LoRA r = 8 on q_proj, v_proj, QLoRA the same over NF4.
"""

from __future__ import annotations

from peftlab.estimate.api import Estimate, Settings, estimate

SCALING_MODELS = {"1B": "llama-3.2-1b", "7B": "llama-2-7b", "13B": "llama-2-13b",
                  "70B": "llama-2-70b"}
SCALING_METHODS = ("full", "lora", "qlora")


def scaling_table(settings: Settings | None = None, r: int = 8) -> list[dict]:
    """One row per size: the estimates and the savings full / LoRA and full / QLoRA."""
    settings = settings or Settings(batch_size=1, seq_len=512)
    rows = []
    for size, preset in SCALING_MODELS.items():
        ests: dict[str, Estimate] = {
            method: estimate(preset, method, settings, **({} if method == "full" else {"r": r}))
            for method in SCALING_METHODS}
        full = ests["full"].memory.total
        rows.append({"size": size, "model": preset, "params": ests["full"].total_params,
                     **{method: est for method, est in ests.items()},
                     "savings_lora": full / ests["lora"].memory.total,
                     "savings_qlora": full / ests["qlora"].memory.total})
    return rows
