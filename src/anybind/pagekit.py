"""The look of anybind's self-contained HTML pages (``anybind report``, ``anybind audit``): the style sheet,
escaping, number formatting, tables, embedded PNG figures (matplotlib, Agg) and thumbnails as ``data:`` URIs."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;max-width:1100px;margin:0 auto;padding:16px 20px 60px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e8;padding-bottom:4px}
.muted{color:#687083}table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde1e8;padding:3px 8px;text-align:right}th{background:#f3f5f8}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;border:1px solid #eef0f3}
nav a{margin-right:12px}pre{background:#f6f7f9;padding:8px;overflow:auto;font-size:12px}
.note{background:#fff8e5;border:1px solid #f0e0b0;padding:6px 10px;border-radius:6px}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        fv = float(v)
    except (TypeError, ValueError):
        return esc(v)
    return "-" if not np.isfinite(fv) else f"{fv:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def img(b64: str | None, alt: str) -> str:
    if not b64:
        return ""
    return f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{b64}"></p>'


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_b64(fig) -> str:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(path: str | Path, size: int = 72) -> str:
    """A small PNG of an image file as an ``<img>`` with a ``data:`` URI ("" when it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except Exception:  # noqa: BLE001 - a thumbnail is decoration; the row still names the file
        return ""
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'
