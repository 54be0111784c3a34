"""PNG charts like the source documents' figures: trainable parameters (log scale) and stacked memory.

matplotlib is imported inside the functions (Agg backend), so the estimator stays instant and
free of plotting imports unless a chart is asked for.
"""

from __future__ import annotations

from pathlib import Path

from peftlab.estimate.api import Estimate

MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LABEL_KEYS = {"r": "r", "num_virtual_tokens": "n", "bottleneck_size": "m"}


def _label(est: Estimate) -> str:
    """The method name and its size knob: "lora r=16", "prompt n=100", "adapters m=64"."""
    knobs = [f"{short}={est.method[key]}" for key, short in LABEL_KEYS.items()
             if est.method.get(key) is not None]
    return " ".join([est.method["method"], *knobs])


def params_chart(estimates: list[Estimate], path: Path, title: str = "") -> Path:
    """Horizontal bars of trainable parameters on a log axis, labelled with % of the model."""
    plt = _pyplot()
    labels = [_label(e) for e in estimates]
    values = [e.trainable_params for e in estimates]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(estimates) + 1.5))
    bars = ax.barh(labels, values, color="#4C72B0")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_title(title or f"Trainable parameters, {estimates[0].model}")
    for bar, est in zip(bars, estimates):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {est.trainable_params:,} ({est.percent:.4g}%)", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def memory_chart(estimates: list[Estimate], path: Path, title: str = "") -> Path:
    """Stacked bars of weights, gradients, optimizer states and activations (GB)."""
    plt = _pyplot()
    labels = [_label(e) for e in estimates]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(estimates) + 2), 5))
    bottom = [0.0] * len(estimates)
    for part in MEMORY_PARTS:
        heights = [getattr(e.memory, part) / 1e9 for e in estimates]
        ax.bar(labels, heights, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for x, total in enumerate(bottom):
        ax.text(x, total, f"{total:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("training memory (GB)")
    ax.set_title(title or f"Training memory, {estimates[0].model} "
                 f"({estimates[0].memory.model} model)")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_charts(estimates: list[Estimate], folder: Path) -> list[Path]:
    """Both charts into `folder` (created): params.png and memory.png."""
    folder.mkdir(parents=True, exist_ok=True)
    return [params_chart(estimates, folder / "params.png"),
            memory_chart(estimates, folder / "memory.png")]
