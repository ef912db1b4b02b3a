"""Device, mixed precision and DistributedDataParallel, decided once at the start of a script.

`setup(device, amp)` returns a `Runtime`: the device, the rank and world size (from torchrun's environment
variables RANK / WORLD_SIZE / LOCAL_RANK), an `is_primary` flag that guards logging and saving, an autocast
context (a null one with `--amp none`) and a GradScaler that is enabled only for fp16. The training loop
then has no device or AMP branches. The original hard-coded `.cuda()` and wrapped the model in DataParallel
(docs/differences.md items 2 and 46).

    torchrun --nproc_per_node 2 train-wa.py ...      # DDP: nccl on CUDA, gloo on CPU
"""
import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from core.utils.errors import UserError

DEVICES = ('auto', 'cpu', 'cuda')
AMP_MODES = ('none', 'bf16', 'fp16')

__all__ = ['DEVICES', 'AMP_MODES', 'Runtime', 'add_device_argument', 'setup', 'cleanup', 'wrap_ddp',
           'all_reduce_sum', 'barrier', 'all_gather_object', 'broadcast_buffers']


@dataclass
class Runtime:
    """Where and how this process computes.

    Attributes:
        device: the torch.device of this process (cuda:LOCAL_RANK % visible GPUs under DDP on GPUs).
        rank, world_size, local_rank: torchrun's values (0, 1, 0 without torchrun).
        amp: 'none' (float32, the reference), 'bf16' (autocast bfloat16) or 'fp16' (autocast float16 + GradScaler).
    """
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    amp: str = 'none'

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def amp_dtype(self):
        return {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(self.amp)

    def autocast(self):
        """A context running the forward passes in the AMP dtype, or a null context with amp 'none'."""
        if self.amp == 'none':
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self):
        """A GradScaler, enabled only for fp16 (bf16 and fp32 need no loss scaling)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == 'fp16')


def add_device_argument(parser):
    """`--device` of every script (train-wa.py, train.py, eval-aa.py, without_DDPM/): the choices of `setup`,
    validated by argparse. One GPU of several: CUDA_VISIBLE_DEVICES=N (torchrun gives each process its own)."""
    parser.add_argument('--device', choices=DEVICES, default='auto', help='auto (CUDA if available), cpu or cuda.')


def setup(device='auto', amp='none') -> Runtime:
    """Decide the device, the AMP mode and (under torchrun with WORLD_SIZE > 1) start the process group.

    Args:
        device: 'auto' (CUDA if available, else CPU), 'cpu' or 'cuda'. Default 'auto'.
        amp: 'none', 'bf16' or 'fp16'. Default 'none'.
    Raises:
        UserError: CUDA asked for without a GPU, fp16 without CUDA, an unknown choice.
    """
    if device not in DEVICES:
        raise UserError(f'unknown --device {device!r}; use one of {", ".join(DEVICES)}.')
    if amp not in AMP_MODES:
        raise UserError(f'unknown --amp {amp!r}; use one of {", ".join(AMP_MODES)}.')
    if device == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda was given but no CUDA device is available; use --device cpu (or auto).')
    use_cuda = device == 'cuda' or (device == 'auto' and torch.cuda.is_available())
    if amp == 'fp16' and not use_cuda:
        raise UserError('--amp fp16 needs a CUDA device (it uses a GradScaler); on CPU use --amp bf16 or none.')

    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        # local_rank % count: launchers that show each rank only its own GPU (SLURM --gpus-per-task=1) give
        # LOCAL_RANK > 0 with one visible device; torchrun --nproc_per_node N on one host gives distinct ones.
        index = local_rank % torch.cuda.device_count() if world_size > 1 else torch.cuda.current_device()
        dev = torch.device('cuda', index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device('cpu')
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:  # binds the process group (nccl) to this rank's GPU
            dist.init_process_group(backend='nccl', device_id=dev)
        else:
            dist.init_process_group(backend='gloo')
    return Runtime(device=dev, rank=rank, world_size=world_size, local_rank=local_rank, amp=amp)


def cleanup():
    """End the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model, runtime: Runtime):
    """DistributedDataParallel over `model` when running distributed, else `model` unchanged.

    Parameters are broadcast from rank 0 at construction; buffers (BatchNorm running statistics) are
    broadcast from rank 0 at every forward (DDP's default), unless the model uses SyncBatchNorm.
    """
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == 'cuda' else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(values, runtime: Runtime):
    """Sum a list of floats over all processes (the identity without DDP). Returns a list of floats."""
    if not runtime.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_object(obj, runtime: Runtime):
    """[obj of rank 0, obj of rank 1, ...] (a one-element list without DDP)."""
    if not runtime.distributed:
        return [obj]
    out = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model, runtime: Runtime):
    """Copy rank 0's buffers (BatchNorm running statistics) to every process (no-op without DDP)."""
    if runtime.distributed:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def barrier(runtime: Runtime):
    if runtime.distributed:
        dist.barrier()
