"""Plots for the notebooks: colourised masks, image grids, curves, parameter plots and
widgets that also leave a static figure behind.

Every plotting function takes an optional ``ax`` and returns the figure or axes, has a
title and labelled axes (with units), and never calls ``plt.show`` itself except the
widget helper (which needs to).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .data.labels import CITYSCAPES_CLASSES, IGNORE_INDEX

__all__ = ["CITYSCAPES_COLORS", "class_colors", "colorize", "show_image", "segmentation_grid", "plot_curves",
           "bar_with_errors", "legend_patches", "explore", "save_figure", "headless"]

# The official Cityscapes colours of the 19 train classes.
CITYSCAPES_COLORS: dict[str, tuple[int, int, int]] = dict(zip(CITYSCAPES_CLASSES, [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]))


def class_colors(classes: Sequence[str]) -> np.ndarray:
    """uint8 [C,3] colours: Cityscapes colours for Cityscapes names, a fixed palette otherwise."""
    out = []
    for i, c in enumerate(classes):
        if c in CITYSCAPES_COLORS:
            out.append(CITYSCAPES_COLORS[c])
        else:
            rng = np.random.default_rng(zlib.crc32(c.encode()))
            out.append(tuple(int(v) for v in rng.integers(40, 255, 3)))
    return np.array(out, dtype=np.uint8)


def colorize(label: torch.Tensor | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """A label map [H,W] -> RGB uint8 [H,W,3]; ignored pixels (255) are black."""
    lab = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    colors = class_colors(classes)
    out = np.zeros(lab.shape + (3,), dtype=np.uint8)
    valid = (lab != IGNORE_INDEX) & (lab >= 0) & (lab < len(classes))
    out[valid] = colors[lab[valid]]
    return out


def _img(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float()
        if x.dim() == 3 and x.shape[0] in (1, 3):
            x = x.permute(1, 2, 0)
        x = x.numpy()
    return np.clip(x, 0, 1)


def show_image(x, ax=None, title: str | None = None):
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    ax.imshow(_img(x) if not (isinstance(x, np.ndarray) and x.dtype == np.uint8) else x)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def legend_patches(classes: Sequence[str]):
    from matplotlib.patches import Patch

    colors = class_colors(classes) / 255.0
    return [Patch(color=colors[i], label=c) for i, c in enumerate(classes)]


def segmentation_grid(rows: Sequence[Sequence[Any]], classes: Sequence[str], col_titles: Sequence[str] | None = None,
                      row_titles: Sequence[str] | None = None, title: str | None = None, cell: float = 2.2,
                      legend: bool = True):
    """A grid of images and label maps. Each entry is an image tensor [3,H,W] (shown as
    is) or an integer label map [H,W] (colourised)."""
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    h, w = None, None
    for r in rows:
        for x in r:
            if x is not None:
                h, w = x.shape[-2:]
                break
        if h:
            break
    aspect = (w / h) if h else 2.0
    fig, axes = plt.subplots(nr, nc, figsize=(cell * aspect * nc, cell * nr + (0.6 if legend else 0)), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(nc):
            ax = axes[i, j]
            x = r[j] if j < len(r) else None
            if x is None:
                ax.axis("off")
                continue
            if isinstance(x, torch.Tensor) and not x.is_floating_point() and x.dim() == 2:
                show_image(colorize(x, classes), ax)
            else:
                show_image(x, ax)
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=9)
        if row_titles:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    if legend:
        fig.legend(handles=legend_patches(classes), loc="lower center", ncol=min(len(classes), 11), fontsize=8,
                   frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if legend else 0, 1, 1))
    return fig


def plot_curves(frame, x: str = "iter", ys: Sequence[str] = (), hue: str | None = None, ax=None,
                title: str = "", ylabel: str = "loss", xlabel: str = "iteration", logy: bool = False):
    """Line plot of training curves from a tidy DataFrame (mean and 95% CI over seeds with seaborn)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ax = ax or plt.gca()
    if ys:
        frame = frame.melt(id_vars=[c for c in frame.columns if c not in ys], value_vars=list(ys),
                           var_name="series", value_name="value")
        sns.lineplot(data=frame, x=x, y="value", hue="series" if hue is None else hue, ax=ax, errorbar=("ci", 95))
    else:
        sns.lineplot(data=frame, x=x, y="value", hue=hue, ax=ax, errorbar=("ci", 95))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    return ax


def bar_with_errors(frame, x: str, y: str, hue: str | None = None, ax=None, title: str = "",
                    ylabel: str = "mIoU (%)", xlabel: str = "", rotate: int = 0, order=None, hue_order=None):
    """Bar plot of mean and standard deviation over seeds (seaborn, ``errorbar="sd"``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ax = ax or plt.gca()
    sns.barplot(data=frame, x=x, y=y, hue=hue, ax=ax, errorbar="sd", capsize=0.1, order=order, hue_order=hue_order)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    if rotate:
        ax.tick_params(axis="x", rotation=rotate)
    return ax


def save_figure(fig, run_dir: str | os.PathLike | None, name: str) -> Path | None:
    """Save a figure as PNG under ``run_dir/figures/`` (no-op without a run dir)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def headless() -> bool:
    """True when the notebook runs without a front end (papermill/nbval set ``KIT_HEADLESS``)."""
    return os.environ.get("KIT_HEADLESS", "") not in ("", "0")


def explore(fn: Callable[..., Any], controls: Mapping[str, Any], defaults: Mapping[str, Any] | None = None):
    """An interactive exploration that always leaves a static figure.

    ``fn(**values)`` draws one figure. The default values are drawn first, as an
    ordinary static figure (what a headless run, a static viewer or a reader without a
    kernel sees). When ipywidgets and a front end are available, ``controls`` (a
    mapping of name -> ipywidgets control) appear below it, and changing them redraws
    the figure in an output area under the controls.
    """
    import matplotlib.pyplot as plt

    values = {name: (defaults or {}).get(name, getattr(w, "value", w)) for name, w in controls.items()}
    fn(**values)
    plt.show()
    if headless():
        return None
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:  # pragma: no cover - ipywidgets is a dependency
        return None
    out = widgets.Output()

    def update(_change=None):
        with out:
            out.clear_output(wait=True)
            fn(**{name: w.value for name, w in controls.items()})
            plt.show()

    for w in controls.values():
        w.observe(update, names="value")
    box = widgets.VBox([widgets.HTML("<b>Explore:</b> change a control to redraw below."),
                        widgets.HBox(list(controls.values())), out])
    display(box)
    return box
