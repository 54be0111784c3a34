"""Tasks, collators, metrics and generation: everything between a data file and a score.

    task = load_task("sst2")                    # or "e2e", a folder, or a CSV/TSV/JSONL file
    collate = ClassificationCollator(tokenizer) # or CausalLMCollator(tokenizer, max_length=...)
    batch = collate(task.train[:8])             # dict of tensors for model(**batch)
"""

from peftlab.data.collators import (
    IGNORE_INDEX,
    CausalLMCollator,
    ClassificationCollator,
    PromptFormat,
    make_collator,
)
from peftlab.data.generation import generate_texts
from peftlab.data.metrics import accuracy, corpus_bleu, generation_scores, macro_f1, rouge_l
from peftlab.data.readers import DataError, read_rows
from peftlab.data.tasks import (
    CAUSAL_LM,
    CLASSIFICATION,
    EMBEDDED,
    KINDS,
    CausalLMExample,
    ClassificationExample,
    ReferenceGroup,
    Task,
    group_references,
    load_task,
)

__all__ = [
    "CAUSAL_LM", "CLASSIFICATION", "EMBEDDED", "IGNORE_INDEX", "KINDS",
    "CausalLMCollator", "CausalLMExample", "ClassificationCollator", "ClassificationExample",
    "DataError", "PromptFormat", "ReferenceGroup", "Task",
    "accuracy", "corpus_bleu", "generate_texts", "generation_scores", "group_references",
    "load_task", "macro_f1", "make_collator", "read_rows", "rouge_l",
]
