"""Contact sheets: for each query a block of rows, each row a few videos, each video a strip of sampled frames
with a label; ground-truth videos framed. Used by dmae-search (a folder's top-k) and its Fig. 5 mode."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from .data.video import FrameSamplingConfig, VideoDecodeError, read_frames, resize_crop

CELL_INCHES = 1.25  # one frame's width and height on the sheet
TITLE_RATIO = 0.4  # a query's title row, as a fraction of an image row's height
DPI = 100

# (video path, label, framed); a row of cells; a query's block: (title, rows)
Cell = tuple[Path, str, bool]
Block = tuple[str, list[list[Cell]]]


def frame_strip(path: Path, fps: float, frames: int, size: tuple[int, int]) -> np.ndarray | None:
    """(h, frames * w, 3) uint8: `frames` frames sampled over the whole video side by side; None if unreadable."""
    try:
        x, mask = read_frames(path, FrameSamplingConfig(fps=fps, max_frames=frames), resize_crop(size))
    except VideoDecodeError:
        return None
    x = x[mask].permute(0, 2, 3, 1).numpy()  # (n, h, w, 3)
    return np.concatenate(list(x), axis=1)


def sheet_size(blocks: list[Block], frames: int) -> tuple[float, float]:
    """(width, height) in inches: the widest row's frames across, every image row plus every title row down."""
    cols = max(len(row) for _, rows in blocks for row in rows)
    image_rows = sum(len(rows) for _, rows in blocks)
    return cols * frames * CELL_INCHES + 0.4, (image_rows + TITLE_RATIO * len(blocks)) * (CELL_INCHES + 0.35) + 0.4


def contact_sheet(blocks: list[Block], out, fps: float, frames: int, size: tuple[int, int] | None) -> Path:
    """Draw `blocks` into the PNG `out` (sheet_size(...) inches at DPI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = tuple(size) if size else (128, 128)
    fig = Figure(figsize=sheet_size(blocks, frames), dpi=DPI)
    FigureCanvasAgg(fig)
    ratios = [r for _, rows in blocks for r in [TITLE_RATIO] + [1.0] * len(rows)]
    cols = max(len(row) for _, rows in blocks for row in rows)
    grid = fig.add_gridspec(len(ratios), cols, height_ratios=ratios, hspace=0.35, wspace=0.05,
                            left=0.02, right=0.98, top=0.98, bottom=0.01)
    chars = int(fig.get_figwidth() * 13)  # bold 9 pt: about 13 characters an inch
    g = 0
    for title, rows in blocks:
        head = fig.add_subplot(grid[g, :])
        head.axis("off")
        head.text(0, 0.0, textwrap.fill(title, chars), fontsize=9, weight="bold", va="bottom",
                  transform=head.transAxes)
        for r, row in enumerate(rows, start=g + 1):
            for c, (path, label, framed) in enumerate(row):
                _cell(fig.add_subplot(grid[r, c]), frame_strip(Path(path), fps, frames, size), label, framed)
        g += 1 + len(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(out)
    return out


def _cell(ax, strip: np.ndarray | None, label: str, framed: bool) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if strip is None:
        ax.set_facecolor("0.85")
        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.imshow(strip)
    ax.set_title(label, fontsize=7, loc="left")
    for spine in ax.spines.values():
        spine.set_color("tab:green" if framed else "0.7")
        spine.set_linewidth(4 if framed else 0.5)
