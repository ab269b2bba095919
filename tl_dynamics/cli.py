"""The ``tl-dynamics`` command: ``report`` on one model, ``compare`` several reports.

``tl-dynamics collect`` streams trajectories into a resumable on-disk store, one
process or many under ``torchrun -m tl_dynamics collect`` (see
:mod:`tl_dynamics.distributed`). ``tl-dynamics report`` runs every measure of the paper's Figures 1-4 on a model, in the
original and the token-shuffled condition, and writes an offline HTML report, the
numbers (``metrics.json``) and the trajectories (safetensors). With no arguments it runs
offline on the packaged MiniLM and Python's own documentation. ``tl-dynamics compare``
overlays several reports on normalised depth.

Bad input (an unknown model while offline, an unreadable texts file, ``--sample`` beyond the
corpus, a half dtype on CPU, an existing output folder, an ``--out`` that cannot be
written, an optional package the input needs but that is not installed) raises
:class:`~tl_dynamics.errors.DynamicsInputError`, which prints one line starting with
``tl-dynamics: error:`` (for a missing package: the ``pip install`` that adds it) and
exits with status 2, writing nothing; every such check runs before the model is loaded
(arguments such as ``--seed``, in ``[0, 2^32)``, are checked by the parser itself). A
failure of the system (a read-only or full disk, a path through a file) is one line and
status 2 too. Any other exception is a bug and keeps its traceback. One run at a time
writes a folder: a second ``collect`` on the same store, or ``report``/``compare`` on the
same ``--out``, exits with status 2 at once, naming the run that holds it. ``--overwrite``
replaces only a folder tl-dynamics wrote, never an input of the command or the working
directory (see :mod:`tl_dynamics._output`). Ctrl-C prints one line and exits with status
130, leaving no temporary folder (an interrupted ``collect`` keeps its complete shards:
the same command resumes).

Example (shell)::

    tl-dynamics report --out minilm-report                     # offline default
    tl-dynamics report --model meta-llama/Llama-3.1-8B --texts wikitext \\
        --device cuda --dtype bfloat16 --out llama-report       # on a GPU with the hub
    tl-dynamics compare minilm-report llama-report --out comparison
    tl-dynamics report --sample 256 --out sample-report        # 256 texts drawn at random
    torchrun --nproc_per_node 2 -m tl_dynamics collect --first 200 --out smollm2-store
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from collections.abc import Sequence
from pathlib import Path

from tl_dynamics.data import CORPORA
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.hooks import SITES
from tl_dynamics.models import DEFAULT_MODEL, DTYPES

__all__ = [
    "PROG",
    "DEFAULT_N",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "SEED_LIMIT",
    "positive_int",
    "seed_int",
    "device_name",
    "parse_positions",
    "add_collect_arguments",
    "main",
]

PROG = "tl-dynamics"
DEFAULT_N = 1000  # the paper's number of texts (section 2.1)
EXIT_BAD_INPUT = 2  # argparse's own status for bad arguments
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
SEED_LIMIT = 2**32  # seeds are in [0, 2^32): what numpy's and scikit-learn's generators take


def positive_int(value: str) -> int:
    """An ``argparse`` type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value!r}")
    return number


def seed_int(value: str) -> int:
    """An ``argparse`` type: an integer seed in ``[0, 2^32)``."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number < SEED_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [0, {SEED_LIMIT}); got {value!r}"
        )
    return number


def device_name(value: str) -> str:
    """An ``argparse`` type: a torch device this machine has (``cpu``, ``cuda:1``, ...)."""
    from tl_dynamics.models import resolve_device

    try:
        resolve_device(value)
    except DynamicsInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
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
        help="'python-docs' (offline; default), 'wikitext' (needs the hub) or a "
        ".txt/.jsonl/.json file",
    )
    report.add_argument(
        "--sample",
        "--n",  # the old name, kept as an alias
        dest="n",
        metavar="N",
        type=int,  # checked by sample_texts, which also knows the corpus size
        default=None,
        help=f"a random sample of N texts, drawn with --seed (default {DEFAULT_N}, or every "
        "text of a smaller corpus; --n is the old name)",
    )
    report.add_argument("--batch-size", type=positive_int, default=16, help="texts per forward pass")
    report.add_argument(
        "--device", type=device_name, default="cpu", help="torch device, e.g. cpu or cuda"
    )
    report.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    report.add_argument(
        "--seed", type=seed_int, default=0, help="seed of sampling and shuffles, in [0, 2^32)"
    )
    report.add_argument("--out", default="tl-dynamics-report", help="output folder")
    report.add_argument(
        "--overwrite", action="store_true", help="replace an --out that tl-dynamics wrote"
    )
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.add_argument(
        "--jacobian",
        action="store_true",
        help="add Jacobian spectra at the teleported layers to the 'Beyond the paper' section "
        "(opt-in: tens of seconds per layer on SmolLM2)",
    )
    twin = report.add_mutually_exclusive_group()
    twin.add_argument(
        "--random-twin",
        dest="random_twin",
        action="store_const",
        const=True,
        default=None,
        help="require the random-weight twin (256 texts through the same architecture with "
        "fresh weights: the training control of every finding and of compare's DSA); by "
        "default it runs whenever the model can be copied",
    )
    twin.add_argument(
        "--no-random-twin",
        dest="random_twin",
        action="store_const",
        const=False,
        help="leave the random-weight twin out (saves one forward pass over 256 texts)",
    )
    report.add_argument(
        "--regimes",
        action="store_true",
        help="add 'Regimes over tokens': 64 texts read at every token, a switching linear "
        "system against one system and the shuffled control (opt-in: one more forward pass "
        "per condition with every position kept, plus the fits)",
    )
    add_collect_arguments(
        commands.add_parser(
            "collect", help="stream trajectories into a resumable store (torchrun splits texts)"
        )
    )
    compare = commands.add_parser("compare", help="overlay several reports on normalised depth")
    compare.add_argument("reports", nargs="+", help="report folders written by 'report'")
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument(
        "--overwrite", action="store_true", help="replace an --out that tl-dynamics wrote"
    )
    compare.add_argument(
        "--no-dsa", action="store_true",
        help="skip the dynamical similarity (DSA) matrix of the reports' trajectories",
    )
    _add_series_parser(commands)
    return parser


def _add_series_parser(commands: Any) -> None:
    series = commands.add_parser(
        "series", help="run the report's measures at every training checkpoint of a model"
    )
    source = series.add_mutually_exclusive_group(required=True)
    source.add_argument("--revisions", help="hub revisions of --model, comma-separated (step0,step1000,...)")
    source.add_argument("--checkpoints", help="local checkpoint folders, comma-separated, in training order")
    series.add_argument("--model", default=None, help="hub name whose --revisions are read (e.g. EleutherAI/pythia-160m)")
    series.add_argument("--sample", dest="n", metavar="N", type=positive_int, default=128, help="texts of the bundled corpus")
    series.add_argument("--pre-only", action="store_true", help="read only resid_pre (parallel-attention models: Pythia)")
    series.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    series.add_argument("--seed", type=seed_int, default=0, help="seed of the control, bootstrap and DSA, in [0, 2^32)")
    series.add_argument("--no-dsa", action="store_true", help="skip the DSA between checkpoints")
    series.add_argument("--out", required=True, help="series folder (rerun the same command to resume)")
    series.add_argument("--overwrite", action="store_true", help="replace an --out that tl-dynamics wrote")
    series.add_argument("--quiet", action="store_true", help="no progress bar")


def _series(args: argparse.Namespace) -> None:
    from tl_dynamics.report.series import SERIES_HTML, run_series

    if args.revisions is not None and args.model is None:
        raise DynamicsInputError("--model must name the hub model whose --revisions are read; got none")
    checkpoints = (args.revisions or args.checkpoints).split(",")
    series = run_series(
        checkpoints, args.out, model=args.model if args.revisions else None, n_texts=args.n,
        seed=args.seed, device=args.device, sites=("pre",) if args.pre_only else ("pre", "mid"),
        dsa=not args.no_dsa, overwrite=args.overwrite, progress=not args.quiet,
    )
    print(f"wrote {series.out / SERIES_HTML} ({len(series.labels)} checkpoints)")


def parse_positions(value: str) -> str | list[int]:
    """``"last"``, ``"all"``, or comma-separated token indices such as ``"0,-1"``."""
    if value in ("last", "all"):
        return value
    try:
        return [int(p) for p in value.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"positions must be 'last', 'all' or comma-separated ints like '0,-1'; got {value!r}"
        ) from error


def add_collect_arguments(collect: argparse.ArgumentParser) -> None:
    """Add the options of the ``collect`` command to ``collect`` (a (sub)parser)."""
    option = collect.add_argument
    option("--model", default=DEFAULT_MODEL, help="minilm, a model folder, or a hub name")
    option("--texts", default="python-docs", help=f"{' or '.join(CORPORA)}, or a .txt/.jsonl/.json")
    option("--out", required=True, help="store folder (created, or resumed)")
    option(
        "--first",
        "--limit",  # the old name, kept as an alias
        dest="limit",
        metavar="N",
        type=positive_int,
        default=None,
        help="only the first N texts, in corpus order (--limit is the old name)",
    )
    option("--batch-size", type=positive_int, default=16, help="texts per forward pass")
    option("--positions", type=parse_positions, default="last", help="last, all, or e.g. 0,-1")
    option("--shuffle", action="store_true", help="the control: shuffle tokens after BOS")
    option("--seed", type=seed_int, default=0, help="seed of the shuffle, in [0, 2^32)")
    option("--include-final", action="store_true", help="append the last block's resid_post")
    option("--sites", nargs="+", default=list(SITES), choices=SITES, help="read points per block")
    option(
        "--shard-size", type=positive_int, default=None, help="samples per shard (default ~256 MiB)"
    )
    option(
        "--device",
        type=device_name,
        default=None,
        help="default: cuda (cuda:LOCAL_RANK) if any, else cpu",
    )
    option("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype")
    option("--no-texts", action="store_true", help="do not keep the texts in the metadata")
    option("--quiet", action="store_true", help="no progress bar")


def _collect(args: argparse.Namespace) -> None:
    """The ``collect`` command: single-process, or one rank of a ``torchrun`` job."""
    from contextlib import ExitStack

    import torch
    import torch.distributed as dist

    from tl_dynamics._output import check_writable, refuse_symlink, writer_lock
    from tl_dynamics.collect import CollectSettings
    from tl_dynamics.data import load_corpus
    from tl_dynamics.distributed import collect_distributed, init_distributed, world_size
    from tl_dynamics.models import load_model
    from tl_dynamics.store import collect_to_store

    parallel = world_size() > 1
    if parallel:
        rank, _, default_device = init_distributed()
    else:
        rank, default_device = 0, "cuda" if torch.cuda.is_available() else "cpu"
    refuse_symlink(args.out)
    check_writable(args.out)
    texts = load_corpus(args.texts)[: args.limit]
    settings = CollectSettings(
        batch_size=args.batch_size,
        positions=args.positions,
        shuffle=args.shuffle,
        seed=args.seed,
        include_final=args.include_final,
        sites=tuple(args.sites),
        corpus=args.texts,
        keep_texts=not args.no_texts,
        progress=not args.quiet,
    )
    with ExitStack() as held:
        if not parallel:  # before the model loads; under torchrun, rank 0 takes it
            held.enter_context(writer_lock(args.out))
        model = load_model(
            args.model,
            device=args.device or default_device,
            dtype=args.dtype,
            progress=not args.quiet,
        )
        try:
            run = collect_distributed if parallel else collect_to_store
            store = run(model, texts, args.out, settings, shard_size=args.shard_size)
        finally:
            if parallel:
                dist.destroy_process_group()
    if rank == 0:
        print(store)


def _local_inputs(*sources: str) -> list[Path]:
    """The sources that are files or folders here (a model folder, a texts file)."""
    return [Path(source) for source in sources if Path(source).exists()]


def _report(args: argparse.Namespace) -> None:
    from tl_dynamics._output import REPORT_KIND, check_output, writer_lock
    from tl_dynamics.data import load_corpus, sample_texts
    from tl_dynamics.models import load_model
    from tl_dynamics.report import run_report

    inputs = _local_inputs(args.model, args.texts)
    check_output(args.out, args.overwrite, inputs=inputs, kind=REPORT_KIND)
    corpus = load_corpus(args.texts)
    n = min(DEFAULT_N, len(corpus)) if args.n is None else args.n
    texts = sample_texts(corpus, n, seed=args.seed)
    with writer_lock(args.out):
        model = load_model(
            args.model, device=args.device, dtype=args.dtype, progress=not args.quiet
        )
        seconds = run_report(
            model,
            texts,
            out=args.out,
            corpus=str(args.texts),
            batch_size=args.batch_size,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=not args.quiet,
            jacobian=args.jacobian,
            random_twin=args.random_twin,
            regimes=args.regimes,
        )
    timings = ", ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items())
    print(f"wrote {Path(args.out) / 'report.html'} ({len(texts)} texts; {timings})")


def _compare(args: argparse.Namespace) -> None:
    from tl_dynamics._output import COMPARE_KIND, check_output, writer_lock
    from tl_dynamics.report.compare import run_compare

    check_output(args.out, args.overwrite, inputs=args.reports, kind=COMPARE_KIND)
    with writer_lock(args.out):
        out = run_compare(
            args.reports, out=args.out, overwrite=args.overwrite, dsa=not args.no_dsa
        )
    print(f"wrote {out / 'compare.html'}")


def _system_error(error: OSError) -> str:
    """One line for an ``OSError``: what failed, on which path."""
    what = error.strerror or str(error) or type(error).__name__
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    return f"{what}: {' -> '.join(repr(str(p)) for p in paths)}" if paths else what


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tl-dynamics`` and ``python -m tl_dynamics``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        {"report": _report, "compare": _compare, "collect": _collect, "series": _series}[args.command](args)
    except DynamicsInputError as error:  # only bad input: a bug keeps its traceback
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:  # the system's refusal (read-only, full, a file on the way)
        print(f"{PROG}: error: {_system_error(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        resume = " (run the same command again to resume)" if args.command in ("collect", "series") else ""
        print(f"{PROG}: interrupted; nothing half-written was left{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
