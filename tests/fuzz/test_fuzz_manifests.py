"""Fuzz: combination manifests (peftlab_combination.json).

Each case copies a saved lora+prompt combination, writes a generated manifest (names and folders
that are paths, links out of or inside the folder, numbers, None; learning-rate scales NaN,
infinite, negative, strings, booleans; broken JSON) and reads it two ways:

- `peftlab eval` (the real CLI) with missing data: it reads the manifest before the data, so it
  ends with one `error:` line about the manifest, or, manifest accepted, about the data;
- `load_adapter` into a tiny BERT, then `save_adapter` of what loaded: either it loads every
  part from inside the combination folder with the saved logits, or one PeftlabError leaves the
  model as it was; nothing is ever written outside the folder saved to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import peftlab
import pytest
import torch
from fuzz_helpers import CASES, Cli, assert_clean_outcome, files_under
from hypothesis import given
from hypothesis import strategies as st
from tiny_models import tiny_batch, tiny_model
from train_helpers import write_tiny_model

from peftlab.core.combination_files import FORMAT, MANIFEST_NAME
from peftlab.errors import PeftlabError


@pytest.fixture(scope="module", autouse=True)
def no_fsync():
    """Durability is not what is fuzzed here; flushing every saved file to disk only costs time."""
    with mock.patch("os.fsync"):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory, no_fsync):
    root = tmp_path_factory.mktemp("fuzz-manifests")
    write_tiny_model(root / "model")
    config = peftlab.make_config("lora+prompt", lora={"r": 2, "alpha": 4}, prompt={"num_virtual_tokens": 2})
    saved = peftlab.apply(tiny_model("bert"), config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for param in saved.adapter_parameters("default").values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
        expected = saved(**tiny_batch()).logits
    folder = root / "case" / "mix"
    peftlab.save_adapter(saved, folder)
    shutil.copytree(folder / "prompt", root / "outside_part")
    (folder / "linked_out").symlink_to(root / "outside_part")
    (folder / "linked_in").symlink_to(folder / "prompt")
    model = peftlab.PeftModel(tiny_model("bert"))
    with torch.no_grad():
        base_logits = model(**tiny_batch()).logits
    return {"root": root, "folder": folder, "model": model, "expected": expected, "base_logits": base_logits,
            "cli": Cli()}


def folder_values(root: Path):
    return st.one_of(
        st.sampled_from(["lora", "prompt", "linked_in", "linked_out", "missing", "../outside_part",
                         "../../outside_part", str(root / "outside_part"), "/tmp", ".", "..", "", "lora/", "./lora",
                         "LORA", "prompt\x00", "lo ra"]),
        st.text(max_size=8), st.integers(-3, 3), st.none(), st.floats(), st.lists(st.just("lora"), max_size=2))


names = st.one_of(st.sampled_from(["lora", "prompt", "a", "b-c", "x_y", "/tmp/abs", "../up", "a.b", "a:b", ""]),
                  st.text(max_size=8), st.integers(), st.none(), st.booleans())
scales = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-5, max_value=10**400),
                   st.booleans(), st.text(max_size=3), st.none())


@st.composite
def manifests(draw, root: Path):
    entry_keys = st.fixed_dictionaries({}, optional={"name": names, "folder": folder_values(root),
                                                     "lr_scale": scales, "method": st.text(max_size=5)})
    components = st.one_of(
        st.lists(entry_keys, max_size=4),
        st.lists(st.fixed_dictionaries({"name": st.sampled_from(["lora", "prompt", "a", "b"]),
                                        "folder": folder_values(root)},
                                       optional={"lr_scale": scales}), min_size=2, max_size=3),
        st.just([{"name": "lora", "folder": "lora"}, {"name": "prompt", "folder": "prompt", "lr_scale": 30.0}]),
        st.integers(), st.text(max_size=4), st.none())
    manifest = draw(st.one_of(
        st.fixed_dictionaries({"format": st.just(FORMAT), "components": components},
                              optional={"method": st.text(max_size=4), "version": st.integers()}),
        st.fixed_dictionaries({"format": st.text(max_size=4), "components": components}),
        st.lists(st.integers(), max_size=2), st.integers(), st.none()))
    raw = draw(st.sampled_from(["json", "json", "json", "json", "broken", "binary"]))
    if raw == "broken":
        return json.dumps(manifest)[:-1].encode()
    if raw == "binary":
        return b"\xff\xfe{\x00"
    return json.dumps(manifest, allow_nan=True).encode()


def test_combination_manifests_fuzzed(world):
    root, folder, model, cli = world["root"], world["folder"], world["model"], world["cli"]
    parts_before = {p: (folder / p).read_bytes() for p in files_under(folder) if (folder / p).is_file()
                    and p != MANIFEST_NAME}
    outside_before = files_under(root) - {p for p in files_under(root) if p.startswith("case")}
    loaded = []

    @given(manifests(root))
    def case(manifest):
        (folder / MANIFEST_NAME).write_bytes(manifest)  # the component folders stay as saved
        result = cli("eval", folder, "--model", root / "model", "--data", root / "no-data")
        error = assert_clean_outcome(result, allow_success=False)
        manifest_accepted = "no data set" in error
        try:
            peftlab.load_adapter(model, folder, name="fuzzed")
        except PeftlabError as refused:
            assert "\n" not in str(refused)
            assert model.configs == {} and model.combinations == {}  # left as it was
            assert not manifest_accepted or "does not match" in str(refused) or "exists already" in str(refused) \
                or "conflict" in str(refused) or "both" in str(refused), str(refused)
        else:
            entries = json.loads(manifest)["components"]
            resolved = {(folder / e["folder"]).resolve() for e in entries}
            assert all(path.parent == folder.resolve() for path in resolved)  # every part from inside
            with torch.no_grad():
                logits = model(**tiny_batch()).logits
            if resolved == {folder / "lora", folder / "prompt"}:
                torch.testing.assert_close(logits, world["expected"], rtol=0, atol=1e-6)
            peftlab.save_adapter(model, folder.parent / "saved", "fuzzed")
            model.delete_adapter("fuzzed")
            loaded.append(manifest)
        with torch.no_grad():
            torch.testing.assert_close(model(**tiny_batch()).logits, world["base_logits"], rtol=0, atol=0)
        outside_now = files_under(root) - {p for p in files_under(root) if p.startswith("case")}
        assert outside_now == outside_before  # nothing written beside the combination folder
        assert all((folder / p).read_bytes() == data for p, data in parts_before.items())

    case()
    assert len(loaded) >= 1  # the valid manifests among the generated ones loaded and saved back
