"""Figures of results: confusion matrices (drawn with numpy, pixel-exact and fast at 400 classes) and training
curves (matplotlib's object API on an Agg canvas, no ``pyplot``, so a notebook's backend is left alone).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# Up to this many classes a confusion matrix carries the class names and the counts in its cells; beyond,
# numbered ticks (the class's label number) and a row-normalised colour only.
NAMED_CLASSES = 30


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ColorBrewer's sequential "Blues" (the colours of matplotlib's "Blues"), white to dark blue.
BLUES = np.array([[247, 251, 255], [222, 235, 247], [198, 219, 239], [158, 202, 225], [107, 174, 214],
                  [66, 146, 198], [33, 113, 181], [8, 81, 156], [8, 48, 107]], np.float64)


def blues(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (..., 3) on the ``BLUES`` scale, linearly between its colours."""
    pos = np.clip(x, 0, 1) * (len(BLUES) - 1)
    k = np.minimum(pos.astype(int), len(BLUES) - 2)
    f = (pos - k)[..., None]
    return ((1 - f) * BLUES[k] + f * BLUES[k + 1]).round().astype(np.uint8)


def _text_size(text: str, scale: float) -> tuple[int, int]:
    import cv2

    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    return w, h + base


def _put(img: np.ndarray, text: str, x: int, y: int, scale: float, colour=(0, 0, 0)) -> None:
    import cv2

    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def confusion_image(cm: np.ndarray, classes, title: str = "") -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A row-normalised confusion matrix (rows: true class, columns: predicted) drawn pixel-exact with numpy.

    The colour of a cell is the square root of the fraction of its true class's videos (white 0, dark blue 1).

    Each class gets a square cell of ``max(2, min(28, 800 // n))`` pixels (6 classes: 28, 101: 7, 400: 2),
    so the matrix is at most ~800 pixels wide at any class count. Up to ``NAMED_CLASSES`` classes the margins
    carry the class names and the cells their counts; beyond, the margins carry class numbers (label order)
    every 10 classes (every 50 above 200).

    Returns:
        (H, W, 3) uint8 RGB image, and the matrix's (left, top, right, bottom) pixel box in it.
    """
    n = len(classes)
    cell = max(2, min(28, 800 // max(n, 1)))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    # The square root of the fraction sets the colour, so that one confused video in a large class still shows.
    rgb = blues(np.sqrt(norm))
    named = n <= NAMED_CLASSES
    step = 1 if named else (10 if n <= 200 else 50)
    ticks = [(i, str(classes[i]) if named else str(i)) for i in range(0, n, step)]
    fs = 0.4
    lw = max(_text_size(t, fs)[0] for _, t in ticks) + 8  # room for the longest label
    line = _text_size("Ag", 0.5)[1] + 6
    left, top = line + lw, 2 * line + lw
    width = max(left + n * cell + 10, _text_size(title, 0.5)[0] + 10)
    height = top + n * cell + 10
    img = np.full((height, width, 3), 255, np.uint8)
    img[top:top + n * cell, left:left + n * cell] = np.repeat(np.repeat(rgb, cell, 0), cell, 1)
    _put(img, title, 4, line - 6, 0.5)
    _put(img, "predicted", left, 2 * line - 6, fs, (80, 80, 80))
    # Column labels and the "true" caption read bottom to top: drawn on a canvas lying on its side, whose row r
    # becomes the image's column r once turned a quarter counter-clockwise.
    cols = np.full((width, lw, 3), 255, np.uint8)
    for i, t in ticks:
        tw, th = _text_size(t, fs)
        _put(img, t, left - tw - 8, top + i * cell + (cell + th) // 2 - 2, fs)
        _put(cols, t, 8, left + i * cell + (cell + th) // 2 - 2, fs)
    img[2 * line:top] = np.rot90(cols, 1)
    side = np.full((line, height - top, 3), 255, np.uint8)  # the rows beside the matrix only
    tw = _text_size("true", fs)[0]
    _put(side, "true", max(0, (height - top) - 1 - n * cell // 2 - tw // 2), line - 6, fs, (80, 80, 80))
    img[top:, :line] = np.rot90(side, 1)
    for i, _ in ticks:  # tick marks at the centre of each labelled row and column
        c = i * cell + cell // 2
        img[top + c, left - 4:left] = 0
        img[top - 4:top, left + c] = 0
    if named and cell >= 14:
        for i, j in zip(*np.nonzero(cm)):
            t = str(cm[i, j])
            tw, th = _text_size(t, 0.35)
            _put(img, t, left + j * cell + (cell - tw) // 2, top + i * cell + (cell + th) // 2 - 2, 0.35,
                 (255, 255, 255) if norm[i, j] > 0.3 else (0, 0, 0))
    return img, (left, top, left + n * cell, top + n * cell)


def png_from_rgb(img: np.ndarray) -> bytes:
    """An RGB image as PNG bytes."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def save_confusion(cm: np.ndarray, classes, path, title: str = "") -> None:
    """Write ``confusion_image`` as a PNG file."""
    try:
        Path(path).write_bytes(png_from_rgb(confusion_image(cm, classes, title)[0]))
    except OSError as e:
        raise OSError(f"{path}: could not write the confusion matrix ({e})") from None


def curves_figure(logs: dict[str, list[dict]]):
    """Training curves of several runs: train loss, and train / validation accuracy per epoch.

    ``logs`` maps a run's name to the rows of its ``log.csv`` (``epoch``, ``train_loss``, ``train_acc``,
    ``val_video_acc``, ...).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    loss, acc = fig.subplots(1, 2)
    for i, (name, rows) in enumerate(logs.items()):
        colour = f"C{i}"
        ep = [int(r["epoch"]) for r in rows]
        loss.plot(ep, [float(r["train_loss"]) for r in rows], marker="o", color=colour, label=name)
        acc.plot(ep, [float(r["val_video_acc"]) for r in rows], marker="o", color=colour, label=f"{name} val video")
        acc.plot(ep, [float(r["train_acc"]) for r in rows], ls="--", color=colour, label=f"{name} train clips")
    loss.set(xlabel="epoch", ylabel="train loss", title="loss")
    acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss, acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
