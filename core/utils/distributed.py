"""Device, mixed precision and DDP, decided once: `setup(device, amp)` -> `Runtime` (docs/differences.md 2, 46)."""
import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from core.utils.errors import UserError

DEVICES = ('auto', 'cpu', 'cuda')
AMP_MODES = ('none', 'bf16', 'fp16')


@dataclass
class Runtime:
    """Where and how this process computes; `amp` is 'none' (float32, the reference), 'bf16' or 'fp16'."""
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

    def autocast(self):
        if self.amp == 'none':
            return contextlib.nullcontext()
        dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(self.amp)
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self):
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == 'fp16')


def add_device_argument(parser):
    """`--device` of every script; one GPU of several: CUDA_VISIBLE_DEVICES=N."""
    parser.add_argument('--device', choices=DEVICES, default='auto', help='auto (CUDA if available), cpu or cuda.')


# A collective waiting this long for a dead or hung peer fails instead of hanging; SCORE_DDP_TIMEOUT_S overrides it.
DDP_TIMEOUT = datetime.timedelta(seconds=float(os.environ.get('SCORE_DDP_TIMEOUT_S', 600)))


def setup(device='auto', amp='none') -> Runtime:
    """Decide the device and AMP mode; under torchrun with WORLD_SIZE > 1, start the process group."""
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
        # % count: a launcher that shows each rank only its own GPU (SLURM --gpus-per-task=1) gives LOCAL_RANK > 0
        index = local_rank % torch.cuda.device_count() if world_size > 1 else torch.cuda.current_device()
        dev = torch.device('cuda', index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device('cpu')
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:  # binds the process group (nccl) to this rank's GPU
            dist.init_process_group(backend='nccl', device_id=dev, timeout=DDP_TIMEOUT)
        else:
            dist.init_process_group(backend='gloo', timeout=DDP_TIMEOUT)
    return Runtime(device=dev, rank=rank, world_size=world_size, local_rank=local_rank, amp=amp)


def cleanup():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model, runtime: Runtime):
    """DDP over `model` when distributed (rank 0's buffers broadcast at every forward, DDP's default)."""
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == 'cuda' else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(values, runtime: Runtime):
    """Sum a list of floats over all processes (float64)."""
    if not runtime.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_object(obj, runtime: Runtime):
    if not runtime.distributed:
        return [obj]
    out = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model, runtime: Runtime):
    """Copy rank 0's buffers (BatchNorm running statistics) to every process."""
    if runtime.distributed:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def barrier(runtime: Runtime):
    if runtime.distributed:
        dist.barrier()
