"""The detailed memory model: its terms, and its activations against autograd's saved tensors."""

import pytest
import torch
from estimate_counting import build

from peftlab.errors import ConfigError
from peftlab.estimate import Settings, estimate, nf4_bytes
from peftlab.core.shapes import shape_from_config

TINY = {
    "bert": dict(model_type="bert", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=96, vocab_size=128, max_position_embeddings=64),
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=128,
                 n_positions=64),
    "llama": dict(model_type="llama", hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                  vocab_size=128, max_position_embeddings=64),
}


def _saved_activation_bytes(model, batch) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        key = tensor.untyped_storage().data_ptr()
        if key not in params:
            seen[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch)
    return sum(seen.values())


@pytest.mark.parametrize("arch", TINY)
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("num_labels", [None, 2])
def test_full_ft_activations_match_autograd_within_12_percent(arch, attention, num_labels):
    if arch == "bert" and num_labels is None:
        pytest.skip("the bare encoder has no loss to train")
    torch.manual_seed(0)
    model = build(TINY[arch], num_labels, device="cpu", attention=attention).train()
    ids = torch.randint(0, 128, (2, 16))
    labels = torch.randint(0, 2, (2,)) if num_labels else ids
    measured = _saved_activation_bytes(model, {"input_ids": ids, "labels": labels})
    settings = Settings(precision="fp32", batch_size=2, seq_len=16, num_labels=num_labels,
                        attention=attention, device="cpu")
    est = estimate(shape_from_config(TINY[arch]), "full", settings)
    assert est.memory.activations == pytest.approx(measured, rel=0.12)


def test_detailed_terms_bf16_mixed():
    est = estimate("llama-2-7b", "full", Settings(precision="bf16-mixed"))
    p = 6_738_415_616
    assert est.memory.weights == p * (2 + 4)  # bf16 working copy + fp32 master
    assert est.memory.gradients == p * 2
    assert est.memory.optimizer == p * 8


def test_frozen_layers_keep_fewer_activations():
    kw = dict(settings=Settings(batch_size=1, seq_len=256))
    full = estimate("llama-2-7b", "full", **kw).memory
    lora = estimate("llama-2-7b", "lora", **kw).memory
    prompt = estimate("llama-2-7b", "prompt", **kw).memory
    assert lora.activations < full.activations
    assert "ffn activation" in full.activation_detail
    assert "ffn activation" not in lora.activation_detail  # down_proj frozen: input not kept
    assert "attention input" in lora.activation_detail  # q_proj/v_proj carry LoRA
    assert prompt.activations > lora.activations - lora.activation_detail["attention input"]


def test_qlora_stores_block_linears_in_nf4():
    lora = estimate("llama-2-7b", "lora").memory
    qlora = estimate("llama-2-7b", "qlora").memory
    block_linear_weights = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    nf4 = 32 * (4 * nf4_bytes(4096 * 4096) + 3 * nf4_bytes(4096 * 11008))
    assert lora.weights - qlora.weights == block_linear_weights * 2 - nf4
    assert nf4 == pytest.approx(block_linear_weights * 4.126953125 / 8, rel=1e-6)


def test_gradient_checkpointing_and_sequence_growth():
    base = dict(batch_size=2, seq_len=512)
    plain = estimate("llama-2-7b", "lora", Settings(**base)).memory.activations
    ckpt = estimate("llama-2-7b", "lora",
                    Settings(**base, gradient_checkpointing=True)).memory.activations
    assert ckpt < plain / 5
    short = estimate("llama-2-7b", "prompt", Settings(**base), num_virtual_tokens=1)
    long = estimate("llama-2-7b", "prompt", Settings(**base), num_virtual_tokens=100)
    assert long.memory.activations > short.memory.activations
    prefix = estimate("llama-2-7b", "prefix", Settings(**base), num_virtual_tokens=100)
    detail = prefix.memory.activation_detail
    assert detail["attention probs (softmax out)"] == 32 * 2 * 32 * 512 * 612 * 4


def test_sdpa_drops_the_score_matrix_and_gqa_narrows_kv():
    est = estimate("llama-3-8b", "lora", Settings(attention="sdpa"))
    assert not any("probs" in name for name in est.memory.activation_detail)
    assert est.memory.activation_detail["k"] == 32 * 4 * 512 * 1024 * 2


def test_settings_errors():
    with pytest.raises(ConfigError, match="precision 'fp8' is unknown; use one of: fp32"):
        estimate("gpt2", "lora", Settings(precision="fp8"))
    with pytest.raises(ConfigError, match="memory model 'rough' is unknown"):
        Settings(memory_model="rough")
    with pytest.raises(ConfigError, match="batch_size=0 is invalid"):
        Settings(batch_size=0)


def test_scaling_table_one_rule():
    from peftlab.estimate.scaling import scaling_table

    rows = scaling_table()
    assert [row["size"] for row in rows] == ["1B", "7B", "13B", "70B"]
    for row in rows:
        full, lora, qlora = (row[m].memory.total for m in ("full", "lora", "qlora"))
        assert full > lora > qlora
        assert row["savings_qlora"] == full / qlora
    assert rows[1]["full"].total_params == 6_738_415_616


def test_memory_per_device_of_several_processes():
    """Data parallel replicates everything but splits the global batch; FSDP2 divides weights,
    gradients and AdamW state and adds what it gathers (root + two blocks, one block's gradients).
    test_fsdp.py checks the block bytes against a sharded model's measured ones."""
    one = estimate("llama-2-7b", "qlora", Settings(batch_size=8)).memory
    half_batch = estimate("llama-2-7b", "qlora", Settings(batch_size=4)).memory
    ddp = estimate("llama-2-7b", "qlora", Settings(batch_size=8, processes=2)).memory
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (one.weights, one.gradients, one.optimizer)
    assert ddp.activations == half_batch.activations and ddp.per_device == {"processes": 2, "sharded": 0}
    fsdp = estimate("llama-2-7b", "qlora", Settings(batch_size=8, processes=2, fsdp=True)).memory
    split = fsdp.per_device
    assert fsdp.weights == -(-one.weights // 2) + split["gathered_root"] + split["gathered_blocks"]
    assert split["gathered_blocks"] == 2 * ((one.weights - split["gathered_root"]) // 32)  # 32 blocks
    assert fsdp.optimizer == -(-one.optimizer // 2)
    # A sharded run keeps transformers' logits and log-softmax where one process fuses the loss head.
    fused = ("loss head workspace (logits, a chunk of rows)", "loss head input gradient",
             "loss head chunk in the compute dtype")
    assert {k: v for k, v in fsdp.activation_detail.items() if k not in ("logits", "log-softmax")} == \
        {k: v for k, v in half_batch.activation_detail.items() if k not in fused}
    eight = estimate("llama-2-7b", "qlora", Settings(batch_size=8, processes=8, fsdp=True)).memory
    assert eight.total < fsdp.total < ddp.total
    with pytest.raises(ConfigError, match="processes > 1 needs the detailed memory model"):
        Settings(memory_model="seed", processes=2)
