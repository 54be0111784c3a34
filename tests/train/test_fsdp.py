"""Sharded training (FSDP2, `--fsdp`): 2 CPU processes under torchrun (gloo) train the adapter one
process trains, each holding half of the transformer blocks' parameters; QLoRA's NF4 state
survives sharding bit for bit, and the saved adapters load in Hugging Face PEFT."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from train_helpers import assert_methods_train_alike, assert_same_adapters, write_tiny_llama, write_toy_data
from typer.testing import CliRunner

import peftlab
from peftlab.cli.main import app
from peftlab.errors import MergeError
from peftlab.estimate import Settings, estimate
from peftlab.models import load_model
from peftlab.quant import Linear4bit, quantize_nf4
from peftlab.quant.loading import dequantize_model, load_model_4bit
from peftlab.quant.sharding import ShardableLinear4bit, make_shardable, pack_state, storage_layout, view_state


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    write_tiny_llama(root / "model")
    write_toy_data(root / "data", train=40, dev=8)
    return root


def run_args(root, out, method):
    # 5 rows per micro-batch (2 + 3 per rank) and 2 micro-batches per step exercise the item weighting.
    return ["train", "--model", str(root / "model"), "--data", str(root / "data"), "--out", str(out),
            "--method", method, "--rank", "4", "--alpha", "8", "--targets", "q_proj,v_proj", "--dropout", "0",
            "--lr", "1e-2", "--steps", "3", "--batch-size", "5", "--grad-accum", "2", "--log-every", "1",
            "--threads", "1", "--no-progress", "--max-dev", "8", *(["--set", "block_size=32"] * (method == "qlora"))]


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_two_sharded_processes_train_the_adapter_one_process_trains(inputs, method, tmp_path):
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "peftlab",
         *run_args(inputs, sharded, method), "--fsdp"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "cpu, 2 processes, sharded (FSDP2)" in launched.stdout
    shares = [float(x) for x in re.findall(r"rank \d [\d.]+ MiB \(([\d.]+)\)", launched.stdout)]
    print(next(line for line in launched.stdout.splitlines() if line.startswith("fsdp:")))  # in the test log
    assert len(shares) == 2 and all(abs(share - 0.5) < 0.01 for share in shares), launched.stdout
    record = json.loads((sharded / "metrics.json").read_text())["fsdp"]
    assert sum(record["held_bytes_per_rank"]) >= record["blocks_bytes"]  # FSDP pads the last shard only
    # `peftlab estimate --processes 2 --fsdp` counts the same block bytes (fp32, NF4 as stored)
    options = {"block_size": 32} if method == "qlora" else {}
    predicted = estimate(str(inputs / "model" / "config.json"), method, Settings(
        processes=2, fsdp=True, precision="fp32", num_labels=2), r=4, target_modules=("q_proj", "v_proj"),
        **options).memory.per_device
    assert predicted["gathered_blocks"] // 2 * 4 == record["blocks_bytes"]  # two blocks gathered, of four
    single_run = CliRunner().invoke(app, run_args(inputs, single, method))
    assert single_run.exit_code == 0, single_run.output

    expected = assert_same_adapters(single, sharded, 1e-4)
    assert any(key.endswith("lora_B.weight") and expected[key].abs().max() > 1e-3 for key in expected)  # it trained
    assert json.loads((sharded / "adapter_config.json").read_text()) == \
        json.loads((single / "adapter_config.json").read_text())
    _hf_peft_gives_peftlabs_logits(inputs, sharded, method)


def _hf_peft_gives_peftlabs_logits(root, adapter, method):
    peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")
    if method == "qlora":
        base = load_model_4bit(str(root / "model"), "classification", num_labels=2, block_size=32).model
        ours = peftlab.load_adapter(base, adapter)
        float_base = load_model_4bit(str(root / "model"), "classification", num_labels=2, block_size=32).model
        dequantize_model(float_base)  # HF PEFT's LoRA on the weights NF4 stores
    else:
        ours = peftlab.load_adapter(load_model(str(root / "model"), "classification", num_labels=2).model, adapter)
        float_base = load_model(str(root / "model"), "classification", num_labels=2).model
    theirs = peft.PeftModel.from_pretrained(float_base, str(adapter)).eval()
    batch = {"input_ids": torch.randint(1000, 2000, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(theirs(**batch).logits, ours.eval()(**batch).logits, rtol=0, atol=1e-5)


def test_every_kind_of_trainable_tensor_trains_sharded_as_in_one_process(tmp_path):
    """IA3 vectors and bottleneck adapters inside the blocks, prefix and prompt hooks at the root,
    and full fine-tuning (every parameter trains, sharded)."""
    write_tiny_llama(tmp_path / "model")
    write_toy_data(tmp_path / "data", train=40, dev=4)
    assert assert_methods_train_alike(tmp_path, 1e-4, "fsdp") == ["adapters", "full", "ia3", "prefix", "prompt"]


@pytest.mark.parametrize("double_quant", [True, False])
def test_the_flat_nf4_storage_views_back_the_exact_state(double_quant):
    weight = torch.randn(48, 40)
    state = quantize_nf4(weight, 32, double_quant)
    flat = pack_state(state)
    layout = storage_layout(state.shape, 32, double_quant)
    assert flat.dtype == torch.uint8 and flat.numel() == state.nbytes() == max(stop for _, stop in layout.values())
    assert all(start % 4 == 0 for name, (start, _) in layout.items() if name != "packed")  # float32 views align
    viewed = view_state(flat, state.shape, 32, double_quant, state.dtype)
    for name, tensor in state.as_tensors().items():
        assert torch.equal(viewed.as_tensors()[name], tensor), name
    layer = Linear4bit(state, torch.randn(48))
    shardable = ShardableLinear4bit(layer)
    assert [name for name, _ in shardable.named_buffers()] == [] and not shardable.nf4_storage.requires_grad
    x = torch.randn(5, 40)
    assert torch.equal(shardable(x), layer(x))
    assert torch.equal(shardable.to(torch.bfloat16).nf4_storage, flat)  # a cast never touches the bytes
    assert torch.equal(shardable.to_float_layer().weight, layer.to_float_layer().weight)


def test_make_shardable_reaches_base_layers_inside_lora_and_merging_a_sharded_model_is_refused(inputs):
    base = load_model_4bit(str(inputs / "model"), "classification", num_labels=2, block_size=32).model
    model = peftlab.apply(base, peftlab.make_config("qlora", r=4, target_modules=("q_proj",), block_size=32))
    batch = {"input_ids": torch.randint(1000, 2000, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    with torch.no_grad():
        before = model(**batch).logits
    paths = make_shardable(model)
    assert len(paths) == 4 * 7 and any(path.endswith("q_proj.base_layer") for path in paths)
    assert not any(type(m) is Linear4bit for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)
    model.sharded = True  # as `distributed.parallelize` marks it under FSDP
    with pytest.raises(MergeError, match="cannot merge a model sharded over processes"):
        model.merge()
