"""Data-parallel collection: several processes, one model each, filling one store.

Collecting trajectories is embarrassingly parallel: every text goes through the model
on its own. With ``K`` processes (``torchrun`` starts them and numbers them by *rank*
``r = 0 .. K-1``), rank ``r`` takes the texts ``r, r + K, r + 2K, ...`` of those not yet
in the store, keeping their indices into the whole list, and streams them to the same
:class:`~tl_dynamics.store.DynamicsStore`:

1. rank 0 takes the store's lock (:func:`tl_dynamics._output.writer_lock`), held until
   the job ends, so that no other run writes the store meanwhile; it creates the store, or checks that the one there is of the same run, and tidies
   what a killed run left, checking every shard's SHA-256 so that the texts of a damaged
   one are collected again (:func:`~tl_dynamics.store.prepare_store`); the others wait;
2. every rank writes its own shards (``shard-r0003-000000.safetensors``) and its own
   partial manifest (``manifest-r0003.json``): no file has two writers;
3. all wait at a barrier, then rank 0 folds the partial manifests into ``manifest.json``
   (:func:`~tl_dynamics.store.consolidate`).

Every process must see the store folder (on several machines: a shared filesystem). A
store filled by ``K`` processes loads to the same :class:`~tl_dynamics.cache.DynamicsCache`
as one filled by a single process, and a killed job resumes with the same command (with
any ``K``). Processes talk through ``torch.distributed``: the ``gloo`` backend on CPUs,
``nccl`` on GPUs.

Recipes (``python -m tl_dynamics collect --help`` lists every option; the GPU ones need
the hub and GPUs, so they are documented, not tested, here)::

    # one process, no torchrun
    python -m tl_dynamics collect --texts python-docs --out smollm2-store

    # CPU, 2 processes (each loads its own copy of the model)
    torchrun --nproc_per_node 2 -m tl_dynamics collect --texts python-docs --out smollm2-store

    # one model per GPU: 8 GPUs, 8 copies of Llama-3.1-8B in bfloat16 (16 GB each);
    # rank r runs on cuda:r (LOCAL_RANK), texts are split 8 ways
    torchrun --nproc_per_node 8 -m tl_dynamics collect --model meta-llama/Llama-3.1-8B \\
        --dtype bfloat16 --texts wikitext --out llama-store --batch-size 32

    # a model too big for one GPU: one process, the model split across GPUs by
    # TransformerBridge (accelerate's device_map), then the ordinary store writer
    python - <<'EOF'
    import torch, tl_dynamics as tld
    from transformer_lens.model_bridge import TransformerBridge
    model = TransformerBridge.boot_transformers(
        "meta-llama/Llama-3.1-70B", dtype=torch.bfloat16, device_map="auto"  # or n_devices=4
    ).eval()
    settings = tld.CollectSettings(batch_size=8)
    tld.collect_to_store(model, tld.data.wikitext(), "llama70b-store", settings)
    EOF

Both kinds combine: with 8 GPUs and a model needing 4, start 2 ranks and give each a
``device_map`` over its own 4 GPUs (``max_memory`` per device) from your own script
calling :func:`collect_distributed`.

Example (inside a process started by ``torchrun``)::

    import tl_dynamics as tld
    from tl_dynamics.distributed import collect_distributed, init_distributed
    rank, world_size, device = init_distributed()
    model = tld.models.load_model(device=device)
    store = collect_distributed(model, tld.data.python_docs(), "smollm2-store")
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tl_dynamics.collect import CollectSettings
from tl_dynamics._output import refuse_symlink, writer_lock
from tl_dynamics.store import DynamicsStore, append_to_store, consolidate, prepare_store

__all__ = [
    "BARRIER_TIMEOUT",
    "world_size",
    "init_distributed",
    "collect_distributed",
]

BARRIER_TIMEOUT = datetime.timedelta(hours=12)
"""How long ranks wait for each other: a rank done early waits at the last barrier for
the slowest one, which on a long run of a large model can take hours (torch's default of
30 minutes would kill the job)."""


def world_size() -> int:
    """Number of processes ``torchrun`` started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(timeout: datetime.timedelta = BARRIER_TIMEOUT) -> tuple[int, int, str]:
    """Join the process group that ``torchrun`` describes in the environment.

    Uses ``nccl`` and the GPU ``cuda:LOCAL_RANK`` when CUDA is available, else ``gloo``
    on the CPU.

    Returns:
        ``(rank, world_size, device)``, the device as a string for ``load_model``.

    Raises:
        RuntimeError: not started by ``torchrun`` (no ``RANK``/``WORLD_SIZE`` set).
    """
    if "RANK" not in os.environ:
        raise RuntimeError(
            "init_distributed needs the environment torchrun sets (RANK, WORLD_SIZE, "
            "MASTER_ADDR, MASTER_PORT); start with: torchrun --nproc_per_node K ..."
        )
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device(device))
    else:
        device = "cpu"
        dist.init_process_group("gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), device


def _all_succeeded(succeeded: bool) -> bool:
    """Whether every rank succeeded (a collective: every rank must call it)."""
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    )
    flag = torch.tensor([int(succeeded)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def collect_distributed(
    model: Any,
    texts: Sequence[str],
    out: str | Path,
    settings: CollectSettings = CollectSettings(),
    *,
    shard_size: int | None = None,
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
) -> DynamicsStore:
    """:func:`~tl_dynamics.store.collect_to_store`, shared by the ranks of a process group.

    Every rank calls it with its own copy of the model and the same texts and
    :class:`~tl_dynamics.collect.CollectSettings` (arguments as
    :func:`~tl_dynamics.store.collect_to_store`, ``fwd_hooks`` included: every rank
    passes the same interventions; only rank 0 shows a progress bar). Rank 0 holds the
    store's lock from start to end. Needs an initialised process group
    (:func:`init_distributed`).

    Returns:
        The complete store, on every rank.

    Raises:
        RuntimeError: no process group, or another rank failed to prepare the store.
        TypeError, ValueError: as ``collect_to_store`` (raised on rank 0), and when
            another run holds the store's lock.
    """
    if not dist.is_initialized():
        raise RuntimeError(
            "collect_distributed needs a process group: call init_distributed() first"
        )
    rank, size = dist.get_rank(), dist.get_world_size()
    with ExitStack() as held:
        failure: Exception | None = None
        if rank == 0:
            try:
                refuse_symlink(out)
                held.enter_context(writer_lock(out))
                prepare_store(model, texts, out, settings, fwd_hooks)
            except Exception as error:  # re-raised below once the other ranks know
                failure = error
        if not _all_succeeded(failure is None):
            raise failure or RuntimeError(
                f"rank 0 could not prepare the store {str(out)!r}; see its error"
            )
        store = DynamicsStore.open(out)
        rank_settings = dataclasses.replace(settings, progress=settings.progress and rank == 0)
        indices = store.missing_texts()[rank::size]
        append_to_store(
            model, texts, store, indices, rank_settings, rank=rank, shard_size=shard_size,
            fwd_hooks=fwd_hooks,
        )
        dist.barrier()
        if rank == 0:
            consolidate(out, verify=False)  # checked when prepared; each shard since, when written
        dist.barrier()
        return DynamicsStore.open(out)
