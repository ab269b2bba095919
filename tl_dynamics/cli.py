"""The ``tl-dynamics`` command: ``report`` on one model, ``compare`` several reports.

``tl-dynamics report`` runs every measure of the paper's Figures 1-4 on a model, in the
original and the token-shuffled condition, and writes an offline HTML report, the
numbers (``metrics.json``) and the trajectories (safetensors). With no arguments it runs
offline on the packaged MiniLM and Python's own documentation. ``tl-dynamics compare``
overlays several reports on normalised depth.

Bad input (an unknown model while offline, an unreadable texts file, ``--n`` beyond the
corpus, a half dtype on CPU, an existing output folder) prints one line starting with
``tl-dynamics: error:`` and exits with status 2, writing nothing.

Example (shell)::

    tl-dynamics report --out minilm-report                     # offline default
    tl-dynamics report --model meta-llama/Llama-3.1-8B --texts wikitext \\
        --device cuda --dtype bfloat16 --out llama-report       # on a GPU with the hub
    tl-dynamics compare minilm-report llama-report --out comparison
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tl_dynamics.models import DEFAULT_MODEL, DTYPES

DEFAULT_N = 1000  # the paper's number of texts (section 2.1)
EXIT_BAD_INPUT = 2  # argparse's own status for bad arguments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-dynamics",
        description="Residual-stream dynamics of a transformer (Fernando & Guitchounts 2025).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="run every measure on one model, write a report")
    report.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="'minilm' (packaged, offline; default), a local Hugging Face folder, or a hub "
        "name such as meta-llama/Llama-3.1-8B",
    )
    report.add_argument(
        "--texts",
        default="python-docs",
        help="'python-docs' (offline; default), 'wikitext' (needs the hub) or a .txt/.jsonl file",
    )
    report.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"number of texts, drawn with --seed (default {DEFAULT_N}, or every text of a "
        "smaller corpus)",
    )
    report.add_argument("--batch-size", type=int, default=16, help="texts per forward pass")
    report.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    report.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    report.add_argument("--seed", type=int, default=0, help="seed of sampling and shuffles")
    report.add_argument("--out", default="tl-dynamics-report", help="output folder")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    compare = commands.add_parser("compare", help="overlay several reports on normalised depth")
    compare.add_argument("reports", nargs="+", help="report folders written by 'report'")
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def _report(args: argparse.Namespace) -> None:
    from tl_dynamics.data import load_corpus, sample_texts
    from tl_dynamics.models import load_model
    from tl_dynamics.report import run_report

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"output folder {args.out!r} exists; pass --overwrite to replace it")
    corpus = load_corpus(args.texts)
    n = min(DEFAULT_N, len(corpus)) if args.n is None else args.n
    texts = sample_texts(corpus, n, seed=args.seed)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    seconds = run_report(
        model,
        texts,
        out=args.out,
        corpus=str(args.texts),
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    timings = ", ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items())
    print(f"wrote {Path(args.out) / 'report.html'} ({len(texts)} texts; {timings})")


def _compare(args: argparse.Namespace) -> None:
    from tl_dynamics.compare import run_compare

    out = run_compare(args.reports, out=args.out, overwrite=args.overwrite)
    print(f"wrote {out / 'compare.html'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tl-dynamics`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        {"report": _report, "compare": _compare}[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ConnectionError,
            ImportError) as error:
        print(f"tl-dynamics: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
