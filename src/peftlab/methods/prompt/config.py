"""Prompt tuning's declaration (torch-free): config, analytic count, literature defaults.

Lester, Al-Rfou & Constant 2021 (arXiv:2104.08691): n trained vectors among the token
embeddings of a frozen model; the hook is in `layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from peftlab.core.config import Annotated, ConfigError, Literal, MethodConfig, Range
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import Footprint


@dataclass(frozen=True)
class PromptTuningConfig(MethodConfig):
    """num_virtual_tokens: prompt length n. init: "random" | "vocab" | "text" (see `layer.py`).
    init_text / init_token_ids: the text and its token ids for init="text" (use `from_text`).
    position: "auto" (after the first token on first-token-pooling encoders, else first),
    "start" (always first, as Hugging Face PEFT) or "after_first"."""

    method: ClassVar[str] = "prompt"
    num_virtual_tokens: Annotated[int, Range(ge=1, le=4096)] = 20
    init: Literal["random", "vocab", "text"] = "random"
    init_text: str | None = None
    init_token_ids: tuple[Annotated[int, Range(ge=0)], ...] | None = None
    position: Literal["auto", "start", "after_first"] = "auto"

    def check(self) -> None:
        if self.init == "text" and not self.init_token_ids:
            raise ConfigError("init='text' needs init_token_ids: build the config with "
                              "PromptTuningConfig.from_text(text, tokenizer)")

    @classmethod
    def from_text(cls, text: str, tokenizer: Any, **fields: Any) -> "PromptTuningConfig":
        """A config initialised from `text`, tokenized (without special tokens) by `tokenizer`."""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"init_text {text!r} gives no tokens: give a non-empty text")
        return cls(init="text", init_text=text, init_token_ids=tuple(ids), **fields)


@dataclass(frozen=True)
class PromptFootprint(Footprint):
    """n·d at the input."""

    config: PromptTuningConfig

    def prompt_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def breakdown(self, shape, num_labels):
        return {"prompt embeddings": self.config.num_virtual_tokens * shape.hidden}


DECLARATION = MethodDeclaration(
    name="prompt", config_class=PromptTuningConfig, label="prompt tuning",
    capabilities=Capabilities(mergeable=False, exact_unmerge=False, identity_at_init=False, model_hook=True),
    implementation="peftlab.methods.prompt.layer:PromptTuning", footprint=PromptFootprint,
    literature=Literature(3e-1, {"num_virtual_tokens": 20}, "Prompt tuning (Lester et al. 2021): 20 tokens at lr 0.3",
                          sweep=(3e-2, 1e-1, 3e-1)),
    paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning, arXiv:2104.08691",
    hf_peft_type="PROMPT_TUNING",
    choose=Path(__file__).with_name("choose.json"),
)
