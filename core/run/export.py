"""Weights as safetensors, in the checkpoints' `module.0.` layout (`reference`, differences item 36) or RobustBench's
DMWideResNet keys (`robustbench`): the library of scripts/export.py (readers re-exported from core.utils.checkpoint)."""
import json
import os
import re

import torch

from core.models.wideresnetwithswish import dataset_mean_std
from core.run.run_dir import read_args
from core.utils.atomic import write_atomic
from core.utils.checkpoint import (
    SAFETENSORS_SUFFIX,
    canonical_state_dict,
    check_finite,
    import_safetensors,
    is_safetensors,
    load_weights,
    read_safetensors,
    safetensors_metadata,
)
from core.utils.errors import UserError

__all__ = ['LAYOUTS', 'FORMAT', 'is_safetensors', 'read_safetensors', 'safetensors_metadata', 'write_safetensors',
           'robustbench_state_dict', 'export_weights']

LAYOUTS = ('reference', 'robustbench')
FORMAT = 'score-at weights 1'
_BLOCK_RE = re.compile(r'^layer\.0\.block\.(\d+)\.')


def write_safetensors(state_dict, path, metadata=None):
    """Write `state_dict` to `path` as safetensors, atomically."""
    st = import_safetensors()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    data = st.torch.save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
    write_atomic(path, lambda f: f.write(data))


def robustbench_state_dict(state_dict, source='the checkpoint'):
    """(the bare DMWideResNet state dict, {'depth', 'width', 'num_classes'}) of `module.0.<key>` weights; UserError
    for --normalize weights or another architecture than WRN-Swish."""
    sd = canonical_state_dict(state_dict)
    prefixes = {k.split('.', 2)[1] for k in sd}
    if prefixes == {'1'}:
        raise UserError(f'{source} was trained with --normalize True: its Normalization layer has no place in '
                        "RobustBench's DMWideResNet (which normalises with the data set's mean/std itself); "
                        'export it with --layout reference.')
    sd = {k[len('module.0.'):]: v for k, v in sd.items()}
    if 'init_conv.weight' not in sd or 'logits.weight' not in sd or not any(map(_BLOCK_RE.match, sd)):
        raise UserError(f"{source} is not a WRN-Swish (wrn-D-W-swish): RobustBench's DMWideResNet layout exists "
                        'only for that family; export it with --layout reference.')
    blocks = len({_BLOCK_RE.match(k).group(1) for k in sd if _BLOCK_RE.match(k)})
    num_classes, channels = sd['logits.weight'].shape
    return sd, {'depth': 6 * blocks + 4, 'width': channels // 64, 'num_classes': int(num_classes)}


def _read_source(src, unaveraged):
    """(state dict, weights file, args.txt dict or {}) of a run folder (its weights-best.pt) or a weights file."""
    key = 'unaveraged_model_state_dict' if unaveraged else 'model_state_dict'
    path = os.path.join(src, 'weights-best.pt') if os.path.isdir(src) else src
    if not os.path.isfile(path):
        raise UserError(f'{path} does not exist: pass a run folder (LOG_DIR/DESC with weights-best.pt) or a '
                        'weights file.')
    args = read_args(os.path.dirname(os.path.abspath(path)), missing_ok=True,
                     fix='repair or remove it (a weights file is exported without one)') or {}
    return load_weights(path, key), path, args


def export_weights(src, out, layout='reference', unaveraged=False, overwrite=False):
    """Export the averaged (or `unaveraged`) model of `src`, a run folder or a weights file, to `out` (.safetensors,
    or .pt / .pth: the bare state dict in the RobustBench layout, as its loader reads); returns the metadata."""
    if layout not in LAYOUTS:
        raise UserError(f'unknown layout {layout!r}: use one of {", ".join(LAYOUTS)}.')
    suffix = os.path.splitext(out)[1]
    if suffix not in (SAFETENSORS_SUFFIX, '.pt', '.pth'):
        raise UserError(f'{out}: the output must end in .safetensors (no pickle) or .pt / .pth (torch.save).')
    if os.path.exists(out) and not overwrite:
        raise UserError(f'{out} exists: pass --overwrite to replace it, or choose another path.')
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UserError(f'{out}: the folder {os.path.dirname(os.path.abspath(out))} does not exist.')
    if suffix == SAFETENSORS_SUFFIX:
        import_safetensors()  # fail before reading a large checkpoint
    state_dict, path, args = _read_source(src, unaveraged)
    check_finite(state_dict, path)
    meta = {'format': FORMAT, 'layout': layout, 'source': os.path.abspath(path),
            'source_state_dict': 'unaveraged_model_state_dict' if unaveraged else 'model_state_dict'}
    meta.update({k: json.dumps(args[k]) for k in ('model', 'normalize', 'data') if k in args})
    if layout == 'robustbench':
        state_dict, arch = robustbench_state_dict(state_dict, source=path)
        mean, std = dataset_mean_std(args.get('data', 'cifar10'))  # without args.txt: CIFAR-10's
        meta['robustbench'] = (f'DMWideResNet(num_classes={arch["num_classes"]}, depth={arch["depth"]}, '
                               f'width={arch["width"]}, activation_fn=Swish, mean={mean}, std={std})')
    else:
        state_dict = canonical_state_dict(state_dict)
    if suffix == SAFETENSORS_SUFFIX:
        write_safetensors(state_dict, out, meta)
    else:
        obj = state_dict if layout == 'robustbench' else {'model_state_dict': state_dict}
        write_atomic(out, lambda f: torch.save(obj, f))
    return meta
