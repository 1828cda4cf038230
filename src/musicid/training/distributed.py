"""Data-parallel training under torchrun: one process per device, gradients averaged by DDP.

Every family's `step()` draws its batch from one seeded generator. Under DDP every rank keeps that
generator in the same state: each draws the *global* batch exactly as one process would (rows, crops,
augmentation; cheap next to the network) and keeps its own share (items rank, rank + W, ...) for the
forward and backward passes, the expensive part. So the ranks together learn from the batch one process
would, a checkpoint needs only the shared generator, and a world of one runs the single-process code
unchanged, draw for draw.

Losses that couple the items of a batch (contrastive negatives, batch-hard triplets) are computed on
the gathered global batch (`gather` keeps the gradient), so 2 processes train the model one process
would, up to float summation order and BatchNorm statistics (per rank on CPU; SyncBatchNorm on CUDA).

The world comes from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK); `musicid stage NAME`
starts the processes itself when `train.world_size` > 1 (`launch`).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import torch

from musicid.errors import ConfigError, MusicidError

# Set by `launch` for the processes it starts: the launcher already holds the stage's lock.
LAUNCHED_ENV = "MUSICID_DDP_LAUNCHED"


class DistributedError(MusicidError):
    """A rank failed or the process group could not be formed."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that validates, logs to MLflow and writes checkpoints and models."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def check_divides(self, keys: str, batch: int) -> None:
        """Every rank must get the same share: one line naming the keys otherwise."""
        if batch % self.size:
            raise ConfigError(f"{keys} is {batch} per step, which {self.size} processes (train.world_size / torchrun "
                              f"--nproc-per-node) cannot split evenly; make it a multiple of {self.size}")

    def share(self, batch: Any) -> Any:
        """This rank's items of a global batch (a tensor, array or list): rank, rank + W, ..."""
        return batch if not self.distributed else batch[self.rank::self.size]

    def wrap(self, modules: torch.nn.Module | Sequence[torch.nn.Module], forward: Callable[..., Any] | None = None,
             device: torch.device | None = None) -> Callable[..., Any]:
        """What `step()` calls for its forward pass: DDP around `modules` when distributed.

        `forward(*inputs)` computes with the modules (e.g. embeddings and a loss) and defaults to the
        first module's own forward. With one process the call goes straight to `forward`. Buffers are
        not broadcast before every forward (DDP's default): the models hold constant buffers (filter
        banks, windows) whose broadcast cost more than the step; BatchNorm's running statistics stay
        each rank's own, and rank 0's are saved.
        """
        modules = [modules] if isinstance(modules, torch.nn.Module) else list(modules)
        forward = forward or modules[0]
        if not self.distributed:
            return forward
        from torch.nn.parallel import DistributedDataParallel

        step = _StepModule(modules, forward)
        on_cuda = device is not None and device.type == "cuda"
        if on_cuda:
            step = torch.nn.SyncBatchNorm.convert_sync_batchnorm(step)
        return DistributedDataParallel(step, device_ids=[device.index] if on_cuda else None, broadcast_buffers=False)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor` concatenated along dim 0, in rank order; gradients flow back to each share."""
        if not self.distributed:
            return tensor
        return _GatherWithGrad.apply(tensor) if tensor.requires_grad else _all_gather(tensor)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (validation rows, stop decisions)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank (per-rank RNG states for a checkpoint)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def _all_gather(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward gives each rank the gradient of its own share summed over every rank's
    loss; DDP's averaging then makes it the gradient of the loss on the whole batch."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        return _all_gather(tensor)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        share = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * share:(dist.get_rank() + 1) * share]


class _StepModule(torch.nn.Module):
    """The modules a step trains, as one module DDP can wrap; its forward is the family's."""

    def __init__(self, modules: list[torch.nn.Module], forward: Callable[..., Any]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)
        self._forward = forward

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return self._forward(*inputs, **kwargs)


def _env_world() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


@lru_cache(maxsize=1)
def current_world() -> World:
    """This process's world from the torchrun environment; joins the process group the first time.

    Backend: NCCL when CUDA is there (one device per local rank), gloo on CPU.
    """
    world = _env_world()
    if world.distributed:
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            backend = os.environ.get("MUSICID_DDP_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
            if backend == "nccl":
                torch.cuda.set_device(world.local_rank)
            try:
                dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
            except (RuntimeError, ValueError) as exc:
                raise DistributedError(f"rank {world.rank}: cannot join the {backend} process group: "
                                       f"{str(exc).splitlines()[0]}") from None
    return world


def end_world() -> None:
    """Leave the process group (at the end of a distributed stage)."""
    if current_world().distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def check_world_size(wanted: int) -> None:
    """Under torchrun the environment decides; a different `train.world_size` is an error, not a guess."""
    found = _env_world().size
    if "WORLD_SIZE" in os.environ and wanted not in (1, found):
        raise ConfigError(f"train.world_size is {wanted} but torchrun started {found} processes (WORLD_SIZE); "
                          f"set train.world_size: {found}, or 1 to follow torchrun")


def launch(world_size: int, argv: list[str], label: str) -> None:
    """Run `musicid <argv>` as `world_size` processes under torch's elastic launcher (what torchrun runs),
    on this machine, and wait; a failed rank ends all of them with one line."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a failed rank prints its own error; we add one line
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    os.environ[LAUNCHED_ENV] = "1"
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=world_size, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5,
                          start_method="spawn")
    print(f"{label}: {world_size} processes (DDP, {'nccl' if torch.cuda.is_available() else 'gloo'})", flush=True)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "musicid.cli", *argv)
    except SignalException as stopped:  # the launcher's agent took SIGTERM / SIGINT and stopped the ranks
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.raise_signal(stopped.sigval)  # now the stage unwinds as it would without DDP
        raise
    except ChildFailedError as failed:
        rank, why = failed.get_first_failure()
        raise DistributedError(f"{label}: rank {rank} of {world_size} failed (exit code {why.exitcode}); "
                               "its error is above") from None
    finally:
        os.environ.pop(LAUNCHED_ENV, None)
