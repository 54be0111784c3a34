"""Hugging Face PEFT's IA³ as the oracle: same vectors, same logits, files in both directions.

GPT-2: HF PEFT scales all of the fused c_attn output (q, k and v); peftlab scales k and v only.
Our files write ones on the q slice, so HF loads them exactly; an HF file loads here when its q
slice is all ones (checked here by freezing it at one) and is refused otherwise.
"""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.errors import AdapterFileError
from peftlab.methods.ia3 import IA3Config
from tiny_models import gpt2_config, tiny_batch, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

CASES = [
    ("bert", "classification", None),
    ("bert", "classification", (["key", "value", "output.dense"], ["output.dense"])),  # HF's own BERT default
    ("llama", "classification", None),
    ("llama", "causal-lm", (["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"], ["down_proj"])),
    ("gpt2", "classification", None),
    ("gpt2", "causal-lm", (["c_attn", "c_fc", "mlp.c_proj"], ["mlp.c_proj"])),
]
IDS = [f"{arch}-{task}-{'default' if t is None else 'explicit'}" for arch, task, t in CASES]


def _batch(task):
    batch = tiny_batch()
    del batch["labels"]
    return batch


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _set_vectors(params, seed=5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.copy_(1 + 0.3 * torch.randn(param.shape, generator=generator))


def _ours(targets):
    if targets is None:
        return IA3Config()
    return IA3Config(target_modules=tuple(targets[0]), feedforward_modules=tuple(targets[1]))


@pytest.mark.parametrize("arch,task,targets", CASES, ids=IDS)
def test_peftlab_file_loads_in_hf_peft_with_same_logits(arch, task, targets, tmp_path):
    batch = _batch(task)
    ours = peftlab.apply(tiny_model(arch, task), _ours(targets))
    _set_vectors(ours.trainable_parameters().values())
    expected = _logits(ours, batch)
    peftlab.save_adapter(ours, tmp_path)

    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(_logits(theirs, batch), expected, rtol=0, atol=1e-5)
    hf_vectors = sum(p.numel() for n, p in theirs.named_parameters() if "ia3_l" in n)
    ours_vectors = sum(p.numel() for k, p in ours.trainable_parameters().items() if k.endswith("ia3_l"))
    # GPT-2: HF holds the q slice (d per c_attn) that peftlab does not train.
    q_slices = gpt2_config().n_embd * 2 if arch == "gpt2" else 0
    assert hf_vectors == ours_vectors + q_slices


@pytest.mark.parametrize("arch,task,targets", CASES, ids=IDS)
def test_hf_peft_file_loads_in_peftlab_with_same_logits(arch, task, targets, tmp_path):
    batch = _batch(task)
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    fields = {} if targets is None else {"target_modules": targets[0], "feedforward_modules": targets[1]}
    theirs = peft.get_peft_model(tiny_model(arch, task), peft.IA3Config(task_type=task_type, **fields))
    vectors = [p for n, p in theirs.named_parameters() if "ia3_l" in n]
    _set_vectors(vectors)
    if arch == "gpt2":
        d = gpt2_config().n_embd
        with torch.no_grad():
            for name, param in theirs.named_parameters():
                if "c_attn.ia3_l" in name:
                    param[:d] = 1  # peftlab represents k and v scaling only
    expected = _logits(theirs, batch)
    theirs.save_pretrained(tmp_path)

    ours = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(_logits(ours, batch), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(ours.merge_and_unload(), batch), expected, rtol=0, atol=1e-5)


def test_hf_gpt2_file_that_scales_queries_is_refused(tmp_path):
    theirs = peft.get_peft_model(tiny_model("gpt2"), peft.IA3Config(task_type="SEQ_CLS"))
    _set_vectors([p for n, p in theirs.named_parameters() if "ia3_l" in n])
    theirs.save_pretrained(tmp_path)
    with pytest.raises(AdapterFileError, match="query slice"):
        peftlab.load_adapter(tiny_model("gpt2"), tmp_path)


def test_hf_bert_default_differs_from_ours_by_the_attention_output():
    # HF's suffix "output.dense" also scales attention.output.dense (input, d per layer).
    ours = peftlab.apply(tiny_model("bert"), IA3Config(modules_to_save=()))
    theirs = peft.get_peft_model(tiny_model("bert"), peft.IA3Config(task_type="SEQ_CLS"))
    hf_vectors = sum(p.numel() for n, p in theirs.named_parameters() if "ia3_l" in n)
    assert hf_vectors == ours.count_parameters()[0] + 32 * 2
