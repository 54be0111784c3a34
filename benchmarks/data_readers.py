"""Reading the embedded data: the `csv` module (peftlab's reader before issue 21) vs `datasets`.

    python benchmarks/data_readers.py [--rounds 15]

Interleaved: each round reads SST-2 train (4,000 rows, TSV) and E2E train (3,000 rows, CSV) once
per reader, in alternating order; prints the median and p10-p90 per file and reader, and checks
both readers give the same rows.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time

from peftlab.data.readers import read_rows
from peftlab.data.tasks import EMBEDDED_DIR

FILES = {"sst2_train.tsv": ("\t", csv.QUOTE_NONE), "e2e_train.csv": (",", csv.QUOTE_MINIMAL)}


def csv_module(path, delimiter, quoting):
    """The former hand-written reader: header + rows as dicts of strings."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = next(reader)
        return [dict(zip(header, values)) for values in reader if values]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    times = {(name, reader): [] for name in FILES for reader in ("csv", "datasets")}
    for name, (delimiter, quoting) in FILES.items():
        assert csv_module(EMBEDDED_DIR / name, delimiter, quoting) == read_rows(EMBEDDED_DIR / name), name
    print(f"load average before: {os.getloadavg()}")
    for round_ in range(args.rounds):
        for name, (delimiter, quoting) in FILES.items():
            readers = [("csv", lambda: csv_module(EMBEDDED_DIR / name, delimiter, quoting)),
                       ("datasets", lambda: read_rows(EMBEDDED_DIR / name))]
            for reader, read in readers[::1 if round_ % 2 else -1]:
                started = time.perf_counter()
                read()
                times[(name, reader)].append(time.perf_counter() - started)
    print(f"load average after: {os.getloadavg()}")
    print("| file | reader | median ms | p10-p90 ms |\n| --- | --- | ---: | ---: |")
    for (name, reader), values in times.items():
        ordered = sorted(values)
        p10, p90 = ordered[len(ordered) // 10], ordered[(9 * len(ordered)) // 10]
        print(f"| {name} | {reader} | {statistics.median(values) * 1000:.1f} | {p10 * 1000:.1f}-{p90 * 1000:.1f} |")


if __name__ == "__main__":
    main()
