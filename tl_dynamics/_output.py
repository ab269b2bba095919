"""Writing output folders: JSON with tensors, self-contained HTML pages, atomic folders.

What :mod:`tl_dynamics.report` and :mod:`tl_dynamics.compare` share when they write a
folder: tensors become JSON lists (NaN as ``null``), figures become one self-contained
HTML page with plotly's JavaScript embedded once, and the folder is written to a
temporary sibling that is renamed into place only when everything succeeded.

Example::

    import torch
    from tl_dynamics._output import atomic_folder, write_json
    with atomic_folder("numbers", overwrite=False) as staging:
        write_json(staging / "numbers.json", {"x": torch.tensor([1.0, float("nan")])})
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline
import torch


def tensor_json(value: Any) -> Any:
    """Tensors as nested lists of Python floats (NaN as ``None``: JSON has no NaN)."""
    if isinstance(value, torch.Tensor):
        return _nan_to_none(value.detach().cpu().tolist())
    if isinstance(value, dict):
        return {k: tensor_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tensor_json(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    return None if isinstance(values, float) and values != values else values


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: .3em; }
table { border-collapse: collapse; width: 100%; font-size: 90%; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
td.yes { background: #e6f4ea; } td.no { background: #fce8e6; } td.undecided { background: #f1f3f4; }
.figure { margin: 1.5em 0; } nav a { margin-right: 1em; }
"""


def render_html(title: str, intro: str, sections: Sequence[tuple[str, str, Sequence[go.Figure]]]) -> str:
    """A self-contained page: plotly.js embedded once, then each section's figures.

    Args:
        title: Page title.
        intro: HTML shown under the title.
        sections: ``(anchor title, HTML text, figures)`` per section.
    """
    body = [f"<h1>{html.escape(title)}</h1>", intro, "<nav>"]
    body += [f"<a href='#s{i}'>{html.escape(name)}</a>" for i, (name, _, _) in enumerate(sections)]
    body.append("</nav>")
    for i, (name, text, figures) in enumerate(sections):
        body.append(f"<h2 id='s{i}'>{html.escape(name)}</h2>{text}")
        for figure in figures:
            figure_html = figure.to_html(full_html=False, include_plotlyjs=False)
            body.append(f"<div class='figure'>{figure_html}</div>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
        "</head><body>" + "\n".join(body) + "</body></html>"
    )


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool):
    """Yield a temporary folder that replaces ``out`` only when the block succeeds.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"output folder {str(out)!r} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON (no NaN: they are ``null``)."""
    path.write_text(json.dumps(tensor_json(record), allow_nan=False))
