"""The embedded SST-2 / E2E subsets: documented counts, and byte-identical to a fresh regeneration
from the shared raw data (so every row matches its source row)."""

import csv
from pathlib import Path

import pytest

from peftlab.data import load_task
from peftlab.data import make_embedded
from peftlab.data.tasks import EMBEDDED_DIR

FILES = ("sst2_train.tsv", "sst2_dev.tsv", "e2e_train.csv", "e2e_dev.csv")


def test_sst2_counts():
    task = load_task("sst2")
    assert len(task.train) == make_embedded.SST2_TRAIN_ROWS == 4000
    assert len(task.dev) == 872
    assert task.label_names == ("0", "1")
    assert sum(ex.label for ex in task.dev) == 444  # positives in GLUE SST-2 dev


def test_e2e_counts_and_full_reference_sets():
    task = load_task("e2e")
    assert len(task.train) == make_embedded.E2E_TRAIN_ROWS == 3000
    assert len(task.dev_references) == make_embedded.E2E_DEV_MRS == 100
    assert sum(len(g.references) for g in task.dev_references) == len(task.dev) == 871
    assert "£" in "".join(ex.prompt for ex in task.train)  # UTF-8 survived


def test_files_are_in_sources_md():
    sources = (EMBEDDED_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for name in FILES:
        assert name in sources
    assert "CC BY-SA 4.0" in sources and "Socher" in sources and "Novikova" in sources


@pytest.mark.skipif(not (make_embedded.DEFAULT_SOURCE / "glue_sst2").is_dir(), reason="no shared raw data")
def test_regeneration_is_byte_identical(tmp_path):
    make_embedded.make_all(make_embedded.DEFAULT_SOURCE, tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (EMBEDDED_DIR / name).read_bytes(), name


@pytest.mark.skipif(not (make_embedded.DEFAULT_SOURCE / "e2e_nlg").is_dir(), reason="no shared raw data")
def test_e2e_dev_keeps_every_source_reference():
    source: Path = make_embedded.DEFAULT_SOURCE / "e2e_nlg" / "devset.csv"
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    task = load_task("e2e")
    for group in task.dev_references:
        assert group.references == tuple(r["ref"] for r in rows if r["mr"] == group.prompt)
