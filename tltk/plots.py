"""PNG plots for evaluation reports: confusion matrix, worst mistakes, training curves."""

from __future__ import annotations

import numpy as np

from tltk import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    try:
        with atomic.writing(path) as partial:
            fig.savefig(partial, format="png", dpi=100, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


def confusion_matrix(matrix, class_names, path):
    """Writes a labelled confusion matrix (rows true, columns predicted) and returns `path`."""
    plt = _pyplot()
    n = len(class_names)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 8 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        high = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > high else "black",
                )
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def misclassified(images, truth, probs, class_names, path, *, limit=16):
    """Writes a grid of the most confident mistakes, titled "true -> predicted (p)"."""
    plt = _pyplot()
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != truth)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:limit]
    cols = max(1, min(4, len(wrong)))
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not len(wrong):
        axes[0, 0].set_title("no mistakes")
    for ax, i in zip(axes.flat, wrong):
        image = np.clip(images[i], 0, 255).astype("uint8")
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(
            f"{class_names[truth[i]]} -> {class_names[predicted[i]]} "
            f"({probs[i, predicted[i]]:.2f})",
            fontsize=8,
        )
    return _save(fig, path)


def training_curves(history, path):
    """Plots loss and accuracy per epoch across all stages, with a line at each stage boundary."""
    plt = _pyplot()
    stages = _stage_histories(history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    boundaries, total = [], 0
    series = {}
    for _, h in stages:
        length = max((len(v) for v in h.values()), default=0)
        for key, values in h.items():
            series.setdefault(key, []).extend(
                [np.nan] * (total - len(series.get(key, []))) + list(values)
            )
        total += length
        boundaries.append(total)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = series.get(prefix + key)
            if values:
                ax.plot(
                    range(1, len(values) + 1),
                    values,
                    "-" if not prefix else "--",
                    marker=".",
                    label=label,
                )
        for (name, _), edge in zip(stages[:-1], boundaries[:-1]):
            ax.axvline(edge + 0.5, color="grey", lw=0.6)
        ax.set_xlabel("epoch (grey lines: stage boundaries)")
        ax.set_title(key)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _stage_histories(history):
    """`[(stage_name, {metric: [values]})]` from a fine-tune result, a History or a dict."""
    if hasattr(history, "histories"):  # a tltk.FineTuneResult
        return [(f"stage {i + 1}", dict(h)) for i, h in enumerate(history.histories)]
    if hasattr(history, "history"):
        return [("", dict(history.history))]
    if isinstance(history, dict):
        return [("", history)]
    if isinstance(history, (list, tuple)):
        return [(f"stage {i + 1}", dict(getattr(h, "history", h))) for i, h in enumerate(history)]
    raise ValueError(
        "`history` must be a fine-tune result, a keras History or a dict. Received: "
        f"{type(history).__name__}"
    )
