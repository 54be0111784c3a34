"""Data through Hugging Face `datasets`: Parquet, Arrow, JSONL, save_to_disk folders and data sets
in the local Hugging Face cache give the same examples as the CSV/TSV files they were made from,
with the same column flags; `peftlab compare` runs on a Parquet file and on a saved folder."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import datasets
import pytest

from peftlab.compare import make_plan, run_compare
from peftlab.data import DataError, load_task
from peftlab.data.readers import read_rows, read_table
from peftlab.data.tasks import EMBEDDED_DIR

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_helpers import write_tiny_model, write_toy_data  # noqa: E402

# The smallest comparison budget (as tests/compare uses): data is what is under test here.
TINY_BUDGET = dict(steps=2, batch_size=8, max_length=16, eval_batch_size=16, timing_steps=1, timing_min_rounds=2,
                   timing_seconds=2.0, lr_choice="literature", latency_batch=4, latency_reps=1)


def _table(name: str) -> datasets.Dataset:
    return datasets.Dataset.from_list(read_rows(EMBEDDED_DIR / name))


@pytest.fixture(scope="module")
def sst2_files(tmp_path_factory):
    """The embedded SST-2 splits as Parquet, Arrow and JSONL files, with int labels as a real data set has."""
    root = tmp_path_factory.mktemp("sst2")
    for split, name in (("train", "sst2_train.tsv"), ("dev", "sst2_dev.tsv")):
        table = _table(name).map(lambda row: {"label": int(row["label"])})
        table.to_parquet(str(root / f"{split}.parquet"))
        table.to_json(str(root / f"{split}.jsonl"))
        arrow = root / "arrow"
        table.save_to_disk(str(arrow / split))
        (root / f"{split}.arrow").write_bytes(next((arrow / split).glob("*.arrow")).read_bytes())
    saved = datasets.DatasetDict({"train": datasets.Dataset.from_parquet(str(root / "train.parquet")),
                                  "validation": datasets.Dataset.from_parquet(str(root / "dev.parquet"))})
    saved.save_to_disk(str(root / "saved"))
    return root


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".jsonl"])
def test_a_file_gives_the_rows_of_the_csv(sst2_files, suffix):
    expected = load_task("sst2")
    task = load_task(str(sst2_files / f"train{suffix}"), dev_file=str(sst2_files / f"dev{suffix}"))
    assert task.train == expected.train and task.dev == expected.dev and task.label_names == expected.label_names


def test_a_save_to_disk_folder_gives_the_rows_of_the_csv(sst2_files):
    expected = load_task("sst2", max_train=100)
    task = load_task(str(sst2_files / "saved"), max_train=100)
    assert task.train == expected.train and task.dev == expected.dev
    assert load_task(str(sst2_files / "saved"), dev_file="train", max_train=5, max_dev=5).dev == expected.train[:5]
    with pytest.raises(DataError, match="no split 'test'.*train, validation"):
        load_task(str(sst2_files / "saved"), dev_file="test")


def test_column_flags_work_on_every_source(tmp_path):
    rows = {"review": ["good film", "dull plot"], "stars": [5, 1], "extra": [[1, 2], [3]]}
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "d.parquet"))
    task = load_task(str(tmp_path / "d.parquet"), text_col="review", label_col="stars", dev_fraction=0)
    assert [(ex.text, task.label_names[ex.label]) for ex in task.train] == [("good film", "5"), ("dull plot", "1")]
    with pytest.raises(DataError, match="no column 'body'.*columns: review, stars, extra"):
        load_task(str(tmp_path / "d.parquet"), text_col="body", label_col="stars")


def test_delimited_text_stays_as_written(tmp_path):
    (tmp_path / "d.csv").write_text('text,label,note\n"a, b",0,NA\nc,1,\n')
    assert read_rows(tmp_path / "d.csv") == [{"text": "a, b", "label": "0", "note": "NA"},
                                             {"text": "c", "label": "1", "note": ""}]
    assert read_table(tmp_path / "d.csv").num_rows == 2


def test_a_broken_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{not json\n')
    with pytest.raises(DataError) as error:
        load_task(str(tmp_path / "bad.jsonl"))
    assert str(error.value).startswith(f"{tmp_path / 'bad.jsonl'}: cannot be read as JSONL") and "\n" not in str(error.value)


def test_a_data_set_in_the_hugging_face_cache_loads_offline(tmp_path, monkeypatch):
    """A hub-cache snapshot as `hf download user/name --repo-type dataset` leaves it."""
    hub = tmp_path / "hub"
    snapshot = hub / "datasets--peftlab--toy-sst2" / "snapshots" / ("0" * 40)
    (snapshot / "data").mkdir(parents=True)
    for split, name in (("train", "sst2_train.tsv"), ("validation", "sst2_dev.tsv")):
        _table(name).select(range(50)).to_parquet(str(snapshot / "data" / f"{split}-00000-of-00001.parquet"))
    (hub / "datasets--peftlab--toy-sst2" / "refs").mkdir()
    (hub / "datasets--peftlab--toy-sst2" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    expected = load_task("sst2", max_train=50, max_dev=50)
    task = load_task("peftlab/toy-sst2")
    assert task.train == expected.train and task.dev == expected.dev and task.name == "peftlab/toy-sst2"
    with pytest.raises(DataError, match="'peftlab/absent' is not in the local Hugging Face cache.*hf download"):
        load_task("peftlab/absent")


def test_compare_runs_on_a_parquet_file_and_a_saved_folder(tmp_path):
    model, folder = write_tiny_model(tmp_path / "model"), write_toy_data(tmp_path / "toy", train=32, dev=8)
    train = datasets.Dataset.from_list(read_rows(folder / "train.tsv"))
    train.to_parquet(str(tmp_path / "toy.parquet"))
    datasets.DatasetDict({"train": train, "validation": datasets.Dataset.from_list(read_rows(folder / "dev.tsv"))}) \
        .save_to_disk(str(tmp_path / "saved"))
    # one file: a tenth of its 32 rows held out as dev (and said so); a saved folder: its own 8 dev rows
    for data, rows in ((tmp_path / "toy.parquet", (29, 3)), (tmp_path / "saved", (32, 8))):
        plan = make_plan(model=str(model), data=str(data), methods="lora", threads=1)
        plan = dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, **TINY_BUDGET))
        results = run_compare(plan, tmp_path / f"out-{data.stem}", progress=False)
        assert results["methods"][0]["error"] is None
        assert (results["run_info"]["task"]["train_rows"], results["run_info"]["task"]["dev_rows"]) == rows
        assert bool(results["run_info"]["task"]["dev_origin"]) == (data.suffix == ".parquet")
