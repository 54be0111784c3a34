"""Regenerate the embedded default data sets from the shared raw copies, deterministically.

    python -m peftlab.data.make_embedded [--source ../shared/data] [--out src/peftlab/data/embedded]

The sampling procedure (seeds and counts below) is documented in `embedded/SOURCES.md`; a test
reruns this module into a temporary folder and checks the output is byte-identical to the shipped
files, so the two can never drift apart.

- SST-2 train: a *uniform* random sample (no stratification) of `SST2_TRAIN_ROWS` rows of
  `glue_sst2/train.tsv`, drawn with `random.Random(SEED).sample`, written in source-file order as
  the exact source lines. SST-2 dev: `dev.tsv` copied whole (872 rows).
- E2E train: a uniform random sample of `E2E_TRAIN_ROWS` rows of `e2e_nlg/trainset.csv`
  (rows, not meaning representations, so some MRs keep several references), in file order.
- E2E dev: `E2E_DEV_MRS` distinct meaning representations sampled uniformly from
  `e2e_nlg/devset.csv`, each with *all* its reference rows, in file order, because BLEU and
  ROUGE-L need the full multi-reference set of every evaluated MR.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path

SEED = 0
SST2_TRAIN_ROWS = 4000
E2E_TRAIN_ROWS = 3000
E2E_DEV_MRS = 100

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
# src/peftlab/data/make_embedded.py -> repository root is three folders up; the shared data
# folder sits next to the repository.
DEFAULT_SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _sample_sorted(n_items: int, k: int, seed: int) -> list[int]:
    """`k` distinct indices of `range(n_items)`, uniformly at random, in ascending order."""
    return sorted(random.Random(seed).sample(range(n_items), k))


def make_sst2(source: Path, out: Path) -> None:
    """Write `sst2_train.tsv` (sampled lines) and `sst2_dev.tsv` (full copy)."""
    # Lines are copied byte for byte: no csv round trip can alter quotes or trailing spaces.
    header, *rows = (source / "glue_sst2" / "train.tsv").read_bytes().splitlines(keepends=True)
    keep = _sample_sorted(len(rows), SST2_TRAIN_ROWS, SEED)
    (out / "sst2_train.tsv").write_bytes(header + b"".join(rows[i] for i in keep))
    (out / "sst2_dev.tsv").write_bytes((source / "glue_sst2" / "dev.tsv").read_bytes())


def _read_e2e(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)  # header: mr,ref
        return [(mr, ref) for mr, ref in reader]


def _write_e2e(path: Path, rows: list[tuple[str, str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["mr", "ref"])
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def make_e2e(source: Path, out: Path) -> None:
    """Write `e2e_train.csv` (sampled rows) and `e2e_dev.csv` (sampled MRs with all refs)."""
    train = _read_e2e(source / "e2e_nlg" / "trainset.csv")
    _write_e2e(out / "e2e_train.csv", [train[i] for i in _sample_sorted(len(train), E2E_TRAIN_ROWS, SEED)])

    dev = _read_e2e(source / "e2e_nlg" / "devset.csv")
    distinct_mrs = list(dict.fromkeys(mr for mr, _ in dev))  # first-seen order
    chosen = {distinct_mrs[i] for i in _sample_sorted(len(distinct_mrs), E2E_DEV_MRS, SEED)}
    _write_e2e(out / "e2e_dev.csv", [row for row in dev if row[0] in chosen])


def make_all(source: Path = DEFAULT_SOURCE, out: Path = EMBEDDED_DIR) -> None:
    out.mkdir(parents=True, exist_ok=True)
    make_sst2(source, out)
    make_e2e(source, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR)
    args = parser.parse_args()
    make_all(args.source, args.out)


if __name__ == "__main__":
    main()
