"""Prompt tuning (Lester, Al-Rfou & Constant 2021, "The Power of Scale for Parameter-Efficient
Prompt Tuning"): n trainable vectors are placed among the token embeddings of a frozen model.

    P ∈ R^{n×d}                                  the only trained tensor (n × d parameters)
    h0 = [P; E(x)]               (B, n + T, d)   decoders (GPT-2, LLaMA): the prompt comes first
    h0 = [E(x0); P; E(x1..)]     (B, n + T, d)   encoders pooling their first token (BERT): after [CLS]

Where the prompt goes. Hugging Face PEFT always prepends, so on BERT its classifier pools the
output of the first *virtual* token. Here encoders keep [CLS] first (`position="auto"`): the
pooler and classifier were pre-trained/initialised to read [CLS] at position 0, and a prompt
after it leaves that contract intact; `position="start"` reproduces Hugging Face PEFT exactly.
Files record the resolved position; a file without it was written by Hugging Face PEFT and
loads with "start", so its logits are reproduced.

How. The hook inserts n placeholder ids into `input_ids` (and ones into the mask, -100 into
causal-LM labels, see `virtual_tokens`), then swaps the placeholder rows of the input embedding's
output for P with a one-shot forward hook on that embedding. The base model therefore still sees
`input_ids`: GPT-2 / LLaMA classifiers find the last non-pad token as usual (with `inputs_embeds`
they cannot, and would pool a pad token of a right-padded row), and `generate()` prefills the
prompt once and then decodes from its KV cache. Per-token logits come back without the virtual
positions, aligned with the caller's `input_ids`.

Initialisation: "random" draws N(0, σ²) with σ the std of the vocabulary embeddings (the prompt
starts at the scale of real tokens); "vocab" copies the embeddings of n random vocabulary
tokens; "text" copies the embeddings of `init_token_ids`, repeated or cut to n. Token ids, not a
tokenizer, live in the config (configs stay plain data): build it with `from_text(text, tokenizer)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from peftlab.core.architectures import ARCHITECTURES
from peftlab.core.protocol import ModelHook
from peftlab.errors import ConfigError
from peftlab.methods import virtual_tokens as vt
from peftlab.methods.prompt.config import DECLARATION, PromptTuningConfig

_HF_INITS = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}


def initial_prompt(embedding: torch.Tensor, config: PromptTuningConfig) -> torch.Tensor:
    """The (n, d) starting prompt drawn from the vocabulary embedding matrix (V, d)."""
    n = config.num_virtual_tokens
    if config.init == "random":
        return torch.randn(n, embedding.shape[1], device=embedding.device) * embedding.detach().float().std()
    if config.init == "vocab":
        ids = torch.randint(0, embedding.shape[0], (n,))
    else:
        if max(config.init_token_ids) >= embedding.shape[0]:
            raise ConfigError(f"init_token_ids contain id {max(config.init_token_ids)} >= "
                              f"the vocabulary size {embedding.shape[0]}")
        ids = torch.tensor(config.init_token_ids).repeat(-(-n // len(config.init_token_ids)))[:n]
    return embedding.detach()[ids.to(embedding.device)].float()


class SoftPrompt(ModelHook):
    """The soft prompt of one adapter: `prompt_embeddings` (n, d) and where it goes in the sequence."""

    def __init__(self, model: nn.Module, config: PromptTuningConfig) -> None:
        super().__init__()
        embedding = vt.input_embedding_weight(model)  # (V, d)
        position = config.position
        if position == "auto":
            row = ARCHITECTURES.get(getattr(model.config, "model_type", None))
            position = "after_first" if row is not None and row.first_token_pooler else "start"
        self.position = position
        self.at = 1 if position == "after_first" else 0
        self.num_virtual_tokens = config.num_virtual_tokens
        self.placeholder = vt.placeholder_id(model)
        self.prompt_embeddings = nn.Parameter(initial_prompt(embedding, config).to(embedding.dtype))
        self._geometry = {"token_dim": embedding.shape[1], "num_layers": model.config.num_hidden_layers,
                          "num_attention_heads": model.config.num_attention_heads}
        # Per-call state between before_* and after_*: whether this call got the virtual tokens,
        # and the one-shot embedding hook that has not fired yet.
        self._inserted = False
        self._armed = None

    def adapter_params(self) -> dict[str, nn.Parameter]:
        return {"prompt_embeddings": self.prompt_embeddings}

    def file_config(self) -> dict[str, Any]:
        # Hugging Face PEFT ignores the position (and always prepends); files without it are theirs.
        return {**self._geometry, "peftlab_position": self.position}

    # --- the swap of placeholder rows for the prompt ---------------------------------------------
    def _disarm(self) -> None:
        if self._armed is not None:
            self._armed.remove()
            self._armed = None

    def _arm(self, model: nn.Module, length: int) -> None:
        """Make the next call of the input embedding put the prompt into the placeholder rows.

        `length` is the sequence length right after this hook's insertion: prompts of adapters
        active after this one are inserted at the same index later and push ours to the right.
        """
        n = self.num_virtual_tokens

        def put_prompt(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            self._disarm()  # one shot: generate()'s decoding steps embed real tokens only
            at = self.at + output.shape[1] - length
            prompt = self.prompt_embeddings.to(output.dtype).expand(output.shape[0], -1, -1)  # (B, n, d)
            return torch.cat([output[:, :at], prompt, output[:, at + n:]], dim=1)

        # On the outermost embedding module (a LoRA wrapper if there is one): its delta never reaches P.
        self._armed = model.get_input_embeddings().register_forward_hook(put_prompt)

    def _insert(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._disarm()
        at, n = self.at, self.num_virtual_tokens
        self._inserted = not vt.continues_cache(kwargs)
        if not self._inserted:  # the cache holds the prompt already: only the mask grows
            return vt.extend_attention_mask(dict(kwargs), at, n)
        embeds = kwargs.get("inputs_embeds")
        kwargs = vt.extend_sequence(kwargs, at, n, self.placeholder)
        if embeds is not None:
            prompt = self.prompt_embeddings.to(embeds.dtype).expand(embeds.shape[0], -1, -1)  # (B, n, d)
            kwargs["inputs_embeds"] = torch.cat([embeds[:, :at], prompt, embeds[:, at:]], dim=1)
        else:
            self._arm(model, kwargs["input_ids"].shape[1])
        return kwargs

    # --- ModelHook ---------------------------------------------------------------------------------
    def before_forward(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._insert(model, kwargs)

    def after_forward(self, outputs: Any, kwargs: dict[str, Any]) -> Any:
        self._disarm()
        logits = getattr(outputs, "logits", None)
        if self._inserted and logits is not None and logits.dim() == 3:  # per-token logits (B, n + T, V)
            outputs.logits = vt.remove_columns(logits, self.at, self.num_virtual_tokens)
        return outputs

    def before_generate(self, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._insert(model, vt.generation_kwargs(kwargs, self.num_virtual_tokens))

    def after_generate(self, outputs: Any, kwargs: dict[str, Any]) -> Any:
        self._disarm()
        if not self._inserted or kwargs.get("input_ids") is None:  # from inputs_embeds: new tokens only
            return outputs
        return vt.without_placeholders(outputs, self.at, self.num_virtual_tokens)


class PromptTuning(vt.VirtualTokenMethod):
    declaration = DECLARATION
    hook_class: ClassVar[type[ModelHook]] = SoftPrompt

    def config_to_file(self, config: PromptTuningConfig) -> dict[str, Any]:
        fields = {"num_virtual_tokens": config.num_virtual_tokens, "num_transformer_submodules": 1,
                  "prompt_tuning_init": _HF_INITS[config.init], "prompt_tuning_init_text": config.init_text}
        if config.init_token_ids is not None:
            fields["peftlab_init_token_ids"] = list(config.init_token_ids)
        return fields

    def config_from_file(self, fields: dict[str, Any]) -> PromptTuningConfig:
        init = {hf: ours for ours, hf in _HF_INITS.items()}.get(fields.get("prompt_tuning_init"), "random")
        token_ids = fields.get("peftlab_init_token_ids")
        # A file holds the trained prompt: a text init whose ids were not recorded is only a record.
        if init == "text" and not token_ids:
            init = "random"
        return PromptTuningConfig.from_dict({
            "num_virtual_tokens": fields.get("num_virtual_tokens"), "init": init,
            "init_text": fields.get("prompt_tuning_init_text"), "init_token_ids": token_ids,
            "position": fields.get("peftlab_position", "start")})
