"""The training curve of a ``jmlgeo train`` run: loss and validation mIoU per step, as a PNG."""

from __future__ import annotations

from pathlib import Path

from jmlnet_geo.io.write import atomic_output


def training_curve(run_path: Path, stages: tuple[str, ...] = ("stage1", "stage2")) -> None:
    """Plot train loss and validation mIoU of the stages to ``training_curve.png``.

    Reads ``logs/<stage>/metrics.csv`` of the run folder for each of ``stages`` (the chain that
    made the bundle: ``stage1``, or ``stage1_again`` with ``--drop-doubtful-by model``, then
    ``stage2``); each stage is drawn after the one before on one step axis.
    """
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for stage in stages:
        metrics = run_path / "logs" / stage / "metrics.csv"
        if not metrics.exists():
            continue
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
        loss = [
            (int(r["step"]) + offset, float(r["train_loss"])) for r in rows if r.get("train_loss")
        ]
        miou = [(int(r["step"]) + offset, float(r["val_miou"])) for r in rows if r.get("val_miou")]
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), label=stage, linewidth=0.8)
        if miou:
            ax_miou.plot(*zip(*miou, strict=True), marker="o", label=stage)
        offset = max([offset] + [s for s, _ in loss]) + 1
    ax_loss.set(xlabel="step", ylabel="train loss", title="training loss")
    ax_miou.set(xlabel="step", ylabel="mIoU", title="validation mIoU")
    for ax in (ax_loss, ax_miou):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    with atomic_output(run_path / "training_curve.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
