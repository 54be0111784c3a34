"""Tokenise a list of examples into one padded batch, ready for `model(**batch)`.

Padding is dynamic: each batch is padded to its own longest row, not to `max_length`, which
roughly halves the work on SST-2 (median sentence ~ 20 tokens). Both collators pad on the right by
default (`padding_side="left"` is accepted); with right padding a decoder's real tokens keep
positions 0..n-1, and HF sequence-classification decoders find the last real token from the pad
id on either side. Batches contain:

    input_ids       (B, T) long
    attention_mask  (B, T) long, 1 on real tokens
    token_type_ids  (B, T) long, only when the tokenizer produces them (BERT)
    labels          (B,) class ids (classification) or (B, T) token ids with -100 on every
                    prompt and padding position (causal-LM; HF models shift them internally)

Tokenizers without a pad token (GPT-2, LLaMA, SmolLM2) pad with their EOS id; the attention mask
and the -100 labels make the pad value irrelevant to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from peftlab.data.readers import DataError
from peftlab.data.tasks import CAUSAL_LM, CLASSIFICATION, CausalLMExample, ClassificationExample

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and every HF model) skips
PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class PromptFormat:
    """How a task prompt becomes the text the model is conditioned on.

    `template` wraps the raw prompt (must contain `{prompt}`); the default ends the prompt with a
    newline so the target starts on a fresh line. With `chat=True` the wrapped prompt becomes the
    user turn of the tokenizer's chat template (plus an optional `system` turn) followed by the
    assistant header, and the target is the assistant's reply. Training (`CausalLMCollator`) and
    evaluation (`generate_texts`) must use the same format.
    """

    template: str = "{prompt}\n"
    chat: bool = False
    system: str | None = None

    def __post_init__(self) -> None:
        if "{prompt}" not in self.template:
            raise DataError(f"prompt template {self.template!r} must contain '{{prompt}}'")

    def render(self, tokenizer, prompt: str) -> str:
        text = self.template.format(prompt=prompt)
        if not self.chat:
            return text
        if not getattr(tokenizer, "chat_template", None):
            raise DataError("chat=True but this tokenizer has no chat template; use chat=False")
        turns = [{"role": "system", "content": self.system}] if self.system else []
        turns.append({"role": "user", "content": text.strip()})  # the chat template ends the turn
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def encode(self, tokenizer, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of the rendered prompts. A rendered chat template already spells out its
        special tokens, so the tokenizer must not add them a second time."""
        texts = [self.render(tokenizer, p) for p in prompts]
        return tokenizer(texts, add_special_tokens=not self.chat)["input_ids"]


def pad_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS token."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    raise DataError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")


def pad(rows: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Stack ragged rows into a (B, T) long tensor, T = longest row, filling with `value`."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            if side == "right":
                out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            else:
                out[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
    return out


def _check_side(side: str) -> None:
    if side not in PADDING_SIDES:
        raise DataError(f"padding_side {side!r}: use one of {', '.join(PADDING_SIDES)}")


class ClassificationCollator:
    """Batches of `ClassificationExample` (single sentences or pairs) for sequence classification.

    Rows longer than `max_length` tokens are truncated (pairs: longest sequence first).
    """

    def __init__(self, tokenizer, max_length: int = 128, padding_side: str = "right") -> None:
        _check_side(padding_side)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding_side = padding_side
        self.pad_id = pad_id(tokenizer)

    def __call__(self, examples: Sequence[ClassificationExample]) -> dict[str, torch.Tensor]:
        pairs = [ex.text_pair for ex in examples]
        if any(p is None for p in pairs) and any(p is not None for p in pairs):
            raise DataError("a batch mixes single sentences and sentence pairs")
        encoded = self.tokenizer(
            [ex.text for ex in examples],
            pairs if pairs[0] is not None else None,
            truncation=True,
            max_length=self.max_length,
        )
        side = self.padding_side
        batch = {
            "input_ids": pad(encoded["input_ids"], self.pad_id, side),
            "attention_mask": pad(encoded["attention_mask"], 0, side),
        }
        if "token_type_ids" in encoded:
            batch["token_type_ids"] = pad(encoded["token_type_ids"], 0, side)
        batch["labels"] = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        return batch


class CausalLMCollator:
    """Batches of `CausalLMExample` for causal-LM fine-tuning with the loss on the target only.

    Each row is `prompt_ids + target_ids + [eos]`: the EOS teaches the model to stop, which greedy
    evaluation relies on. `labels` copies the ids and sets -100 on the prompt and on padding.
    When a row exceeds `max_length`, the target (with its EOS) is kept whole if it fits and the
    prompt loses its leftmost tokens; a target longer than `max_length` is cut on the right.
    """

    def __init__(
        self,
        tokenizer,
        max_length: int = 256,
        prompt_format: PromptFormat = PromptFormat(),
        padding_side: str = "right",
    ) -> None:
        _check_side(padding_side)
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no EOS token; causal-LM targets need one to end on")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt_format = prompt_format
        self.padding_side = padding_side
        self.pad_id = pad_id(tokenizer)

    def __call__(self, examples: Sequence[CausalLMExample]) -> dict[str, torch.Tensor]:
        prompts = self.prompt_format.encode(self.tokenizer, [ex.prompt for ex in examples])
        targets = self.tokenizer([ex.target for ex in examples], add_special_tokens=False)["input_ids"]
        input_rows, label_rows = [], []
        for prompt, target in zip(prompts, targets):
            target = (target + [self.tokenizer.eos_token_id])[: self.max_length]
            room = self.max_length - len(target)
            prompt = prompt[len(prompt) - room:] if room > 0 else []
            input_rows.append(prompt + target)
            label_rows.append([IGNORE_INDEX] * len(prompt) + target)
        side = self.padding_side
        return {
            "input_ids": pad(input_rows, self.pad_id, side),
            "attention_mask": pad([[1] * len(r) for r in input_rows], 0, side),
            "labels": pad(label_rows, IGNORE_INDEX, side),
        }


COLLATORS = {CLASSIFICATION: ClassificationCollator, CAUSAL_LM: CausalLMCollator}


def make_collator(kind: str, tokenizer, **options):
    """The collator for a task kind (`Task.kind`), so a training loop needs no branch on it;
    `options` go to its constructor (`max_length`, `padding_side`, and for causal-LM
    `prompt_format`)."""
    if kind not in COLLATORS:
        raise DataError(f"no collator for task kind {kind!r}; use one of {', '.join(COLLATORS)}")
    return COLLATORS[kind](tokenizer, **options)
