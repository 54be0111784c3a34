"""Rows for tables, JSON and CSV from estimates, seed reproductions and the scaling table.

Everything is first flattened to rows (list of dicts with the same keys), so the rich table,
the CSV and the JSON views cannot disagree.
"""

from __future__ import annotations

import json

from peftlab.estimate.api import Estimate
from peftlab.core.registry import declaration
from peftlab.estimate.seeds import (
    DISTILBERT_NOTE, SEED_000_MEMORY_NOTE, SEED_003_SCALING, format_params, format_percent,
    seed_000, seed_000_distilbert, seed_003,
)
from peftlab.tables import TableData, csv_table
from peftlab.tables import print_tables as print_shared

GB = 1e9


def _hyperparams(est: Estimate, changed_only: bool = False) -> str:
    """Compact "r=16 target_modules=q_proj,v_proj" text of the method's settings."""
    name = est.method["method"]
    defaults = declaration(name).config_class().to_dict() if changed_only and "+" not in name else {}
    parts = []
    for key, value in est.method.items():
        if key == "method" or value is None or defaults.get(key, object()) == value:
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(map(str, value))
        parts.append(f"{key}={value}")
    return " ".join(parts)


def estimate_rows(estimates: list[Estimate]) -> list[dict]:
    """One row per estimate: parameters, file sizes and memory (GB)."""
    rows = []
    for est in estimates:
        mem = est.memory
        rows.append({"model": est.model, "method": est.method["method"],
                     "hyperparams": _hyperparams(est), "trainable": est.trainable_params,
                     "percent": round(est.percent, 6), "total_params": est.total_params,
                     "file_fp32_bytes": est.file_bytes["float32"],
                     "file_bf16_bytes": est.file_bytes["bfloat16"],
                     "weights_gb": round(mem.weights / GB, 4),
                     "gradients_gb": round(mem.gradients / GB, 4),
                     "optimizer_gb": round(mem.optimizer / GB, 4),
                     "activations_gb": round(mem.activations / GB, 4),
                     "total_gb": round(mem.total / GB, 4)})
    return rows


def display_rows(estimates: list[Estimate]) -> list[dict]:
    """Narrow rows for the terminal: changed hyperparameters only, sizes with units."""
    return [{"method": est.method["method"], "settings": _hyperparams(est, changed_only=True),
             "trainable": est.trainable_params, "% of model": f"{est.percent:.4g}%",
             "file fp32": _size(est.file_bytes["float32"]),
             "file bf16": _size(est.file_bytes["bfloat16"]),
             **{part: f"{getattr(est.memory, part) / GB:.2f}"
                for part in ("weights", "gradients", "optimizer", "activations")},
             "total GB": f"{est.memory.total / GB:.2f}"}
            for est in estimates]


def breakdown_rows(estimates: list[Estimate]) -> list[dict]:
    """One row per (estimate, module type) of the trainable-parameter breakdown."""
    return [{"model": est.model, "method": est.method["method"], "module": module,
             "params": count, "percent_of_trainable": round(100 * count / est.trainable_params, 4)}
            for est in estimates for module, count in est.breakdown.items()]


def seed_rows() -> dict[str, list[dict]]:
    """Both seeds' tables: ours next to the printed figures, and the notes."""
    params_memory = [{"method": row.label, "trainable": format_params(est.trainable_params),
                      "seed trainable": row.printed["params"],
                      "% of model": format_percent(est.percent),
                      "seed %": row.printed["percent"],
                      "weights": f"{est.memory.weights / GB:.1f} GB",
                      "optimizer": f"{est.memory.optimizer / GB:.1f} GB",
                      "total": f"{est.memory.total / GB:.1f} GB",
                      "seed total": row.printed["total"], "exact params": est.trainable_params,
                      "assumption": row.assumption}
                     for row, est in seed_000()]
    distilbert = [{"method": row.label, "total": f"{total / 1e6:.1f}M",
                   "seed total": row.printed["total"], "trainable": f"{trainable / 1e6:.3f}M",
                   "seed trainable": row.printed["trainable"],
                   "%": f"{100 * trainable / total:.3f}%", "seed %": row.printed["percent"]}
                  for row, _, trainable, total in seed_000_distilbert()]
    seven_b = [{"method": row.label, "params": est.trainable_params,
                "seed params": row.printed["params"],
                "float32": _size(est.file_bytes["float32"]), "seed storage": row.printed["storage"],
                "assumption": row.assumption}
               for row, est in seed_003()]
    printed = SEED_003_SCALING["printed"]
    scaling = [{"size": size, "seed full FT": full, "seed LoRA": lora, "seed savings": saving,
                "float32 weights only": _size(float(size[:-1]) * 1e9 * 4)}
               for size, (full, lora, saving) in printed.items()]
    return {"source 000: 7B parameters and memory (batch 4, seq 512, seed memory model)":
            params_memory,
            "source 000: DistilBERT counted by HF PEFT (2 labels)": distilbert,
            "source 003: 7B parameters and storage": seven_b,
            "source 003: scaling table as printed": scaling,
            "notes": [{"note": SEED_000_MEMORY_NOTE}, {"note": DISTILBERT_NOTE},
                      {"note": SEED_003_SCALING["note"]}]}


def scaling_rows(table: list[dict]) -> list[dict]:
    """`scaling.scaling_table()` as printable rows (GB)."""
    return [{"size": row["size"], "model": row["model"], "params": row["params"],
             **{f"{m} GB": round(row[m].memory.total / GB, 1) for m in ("full", "lora", "qlora")},
             "full/LoRA": round(row["savings_lora"], 1),
             "full/QLoRA": round(row["savings_qlora"], 1)}
            for row in table]


def _size(n_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} B"


def to_csv(rows: list[dict]) -> str:
    """CSV with a header from the union of keys, in first-seen order."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    return csv_table(TableData("", tuple(fields), [tuple(row.get(f) for f in fields) for row in rows]))


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=str)


def print_tables(tables: dict[str, list[dict]], notes: list[str] = (), fmt: str = "table") -> None:
    """Each titled list of rows as a table (`peftlab.tables`: never cut at 80 columns), then notes."""
    print_shared([TableData.from_records(title, rows) for title, rows in tables.items()], fmt, notes)
