"""Checkpoint I/O (docs/differences.md item 36): strict loading of the reference's keys and their usual variants
(DDP's, torch.compile's), atomic checksummed saves, loads with weights_only=True (item 53), .safetensors."""
import hashlib
import os
import pickle
import re
import zipfile
from collections import Counter

import torch
import torch.nn as nn

from core.utils.atomic import CHECKSUM_SUFFIX, write_atomic
from core.utils.errors import UserError

SAFETENSORS_SUFFIX = '.safetensors'
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
_INDEX_RE = re.compile(r'^(\d+)\.')


def unwrap_model(model):
    """Strip (Distributed)DataParallel and torch.compile wrappers down to create_model's ModelWrapper."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, '_orig_mod', None), nn.Module):
            model = model._orig_mod
        else:
            return model


def strip_wrapper_prefixes(state_dict):
    """(state dict, removed prefix): leading `module.` / `_orig_mod.` removed while every key has the same one."""
    sd = dict(state_dict)
    removed = ''
    while sd:
        for p in _WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                removed += p
                break
        else:
            break
    return sd, removed


def _sequential_index(keys):
    """The common leading `N.` index of `keys` (a Sequential child), or None if they do not all share one."""
    indices = {m.group(1) if m else None for m in map(_INDEX_RE.match, keys)}
    if len(indices) == 1 and None not in indices:
        return int(indices.pop())
    return None


def canonical_state_dict(state_dict, backbone_index=0):
    """`state_dict` in the reference layout `module.P.<backbone key>`; bare backbone keys get P = `backbone_index`
    (0 without --normalize, 1 with it). Values are not copied."""
    sd, _ = strip_wrapper_prefixes(state_dict)
    if sd and _sequential_index(sd) is None:
        sd = {f'{backbone_index}.{k}': v for k, v in sd.items()}
    return {f'module.{k}': v for k, v in sd.items()}


def _head_classes(sd, key):
    return int(sd[key].shape[0]) if key in sd and sd[key].dim() == 2 else None


def _count(keys, pattern):
    """Counter of group(1) -> number of distinct group(2) over the keys matching `pattern`."""
    seen = {}
    for k in keys:
        m = re.match(pattern, k)
        if m:
            seen.setdefault(m.group(1), set()).add(m.group(2))
    return Counter({g: len(v) for g, v in seen.items()})


def _infer_architecture(sd):
    """(architecture name, num_classes) from the keys and shapes of a backbone state dict, or (None, None)."""
    keys = list(sd)
    for stem, head, pattern, first, suffix in (  # WRN-Swish, WRN (ReLU)
            ('init_conv.weight', 'logits.weight', r'^layer\.(\d+)\.block\.(\d+)\.', '0', '-swish'),
            ('conv1.weight', 'fc.weight', r'^block(\d)\.layer\.(\d+)\.', '1', '')):
        blocks = _count(keys, pattern) if stem in sd and head in sd else {}
        if len(blocks) == 3:
            return f'wrn-{6 * blocks[first] + 4}-{sd[head].shape[1] // 64}{suffix}', _head_classes(sd, head)
    if 'conv_2d.weight' in sd and 'logits.weight' in sd:  # PreAct ResNet-Swish
        blocks = _count(keys, r'^layer_(\d+)\.(\d+)\.')
        depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}.get(tuple(blocks[str(i)] for i in range(4)))
        if depth:
            return f'preact-resnet{depth}-swish', _head_classes(sd, 'logits.weight')
    if 'conv1.weight' in sd and 'linear.weight' in sd:  # ResNet / PreAct ResNet
        blocks = tuple(_count(keys, r'^layer(\d)\.(\d+)\.')[str(i)] for i in range(1, 5))
        bottleneck = any('.conv3.' in k for k in keys)
        depth = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
                 ((3, 4, 23, 3), True): 101}.get((blocks, bottleneck))
        if depth:
            family = 'resnet' if 'bn1.weight' in sd else 'preact-resnet'
            return f'{family}{depth}', _head_classes(sd, 'linear.weight')
    return None, None


def describe_state_dict(state_dict):
    """E.g. 'a wrn-28-10-swish (10 classes)' (that family's ReLU variant has the same weights), else 'a different
    architecture (N tensors)'."""
    sd, _ = strip_wrapper_prefixes(state_dict)
    if sd and _sequential_index(sd) is not None:
        sd = {_INDEX_RE.sub('', k, count=1): v for k, v in sd.items()}
    name, classes = _infer_architecture(sd)
    if name is None:
        return f'a different architecture ({len(state_dict)} tensors)'
    return f'a {name} ({classes} classes)' if classes is not None else f'a {name}'


def load_state_dict(model, state_dict, source=None, model_from='--model',
                    fix='pass the --model and data set the weights were trained with'):
    """Load `state_dict` (any accepted prefix) strictly into the unwrapped `model` and return it; a one-line UserError
    for another architecture (naming both), another --normalize or NaN/inf weights."""
    target = unwrap_model(model)
    source = f'checkpoint {source}' if source is not None else 'the checkpoint'
    target_sd = target.state_dict()
    target_stripped, target_prefix = strip_wrapper_prefixes(target_sd)
    target_index = _sequential_index(target_stripped)

    sd, _ = strip_wrapper_prefixes(state_dict)
    source_index = _sequential_index(sd) if sd else None
    if target_index is not None and source_index is None:  # bare backbone keys
        sd = {f'{target_index}.{k}': v for k, v in sd.items()}
    elif target_index is None and source_index is not None:  # Sequential keys into a bare backbone
        sd = {_INDEX_RE.sub('', k, count=1): v for k, v in sd.items()}
    normalize_differs = (source_index != target_index and getattr(target, 'normalize', None) is not None
                         and {source_index, target_index} == {0, 1})
    if normalize_differs:  # compare the backbones first; complain about --normalize only if they agree
        sd = {_INDEX_RE.sub(f'{target_index}.', k, count=1): v for k, v in sd.items()}
    sd = {target_prefix + k: v for k, v in sd.items()}

    missing = [k for k in target_sd if k not in sd]
    unexpected = [k for k in sd if k not in target_sd]
    wrong_shape = [k for k in target_sd if k in sd and tuple(sd[k].shape) != tuple(target_sd[k].shape)]
    if missing or unexpected or wrong_shape:
        name, classes = getattr(target, 'name', None), getattr(target, 'num_classes', None)
        known = isinstance(name, str) and classes is not None
        have = describe_state_dict(state_dict)
        want = f'{name} ({classes} classes)' if known else describe_state_dict(target_sd)[2:]
        detail = []
        if missing:
            detail.append(f'{len(missing)} missing keys (e.g. {missing[0]})')
        if unexpected:
            detail.append(f'{len(unexpected)} unexpected keys (e.g. {unexpected[0]})')
        if wrong_shape:
            k = wrong_shape[0]
            detail.append(f'{len(wrong_shape)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} vs '
                          f'{tuple(target_sd[k].shape)})')
        raise UserError(f'{source} holds {have} but {model_from} is {want}: {", ".join(detail)}; {fix}')
    if normalize_differs:
        raise UserError(f'{source} was saved with --normalize {source_index == 1} (keys module.{source_index}.*) '
                        f'but the model is built with --normalize {target_index == 1}: '
                        f'pass --normalize {source_index == 1}')
    check_finite(state_dict, source)
    target.load_state_dict(sd, strict=True)
    return target


def check_finite(state_dict, source):
    """NaN/inf weights would otherwise be evaluated (or exported) as a chance-level model."""
    bad = next((k for k, v in state_dict.items()
                if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f'{source}: tensor {bad} holds NaN or inf values (a diverged run or a damaged file); pass '
                        'a checkpoint with finite weights, e.g. an earlier one of the run')


def to_cpu(obj):
    """`obj` with every tensor of its nested dicts, lists and tuples on the CPU (CPU tensors not copied)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        out = type(obj)((k, to_cpu(v)) for k, v in obj.items())
        if hasattr(obj, '_metadata'):  # a module state dict's version information
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            digest.update(block)
    return digest.hexdigest()


def save_atomic(obj, path):
    """torch.save `obj` atomically as CPU tensors, then its sha256 in `path.sha256` (the old sidecar goes first: a kill
    in between leaves none, never a wrong one)."""
    path, sidecar = os.fspath(path), os.fspath(path) + CHECKSUM_SUFFIX

    def write(f):
        torch.save(to_cpu(obj), f)
        if os.path.exists(sidecar):
            os.remove(sidecar)
    write_atomic(path, write)
    line = f'{sha256_file(path)}  {os.path.basename(path)}\n'
    write_atomic(sidecar, lambda f: f.write(line.encode()))


def load_checkpoint(path, map_location='cpu'):
    """torch.load(path, map_location, weights_only=True); a missing, corrupt or refused (pickled code) file is a
    one-line UserError of its own."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = 'is a directory, not a file' if os.path.isdir(path) else 'does not exist'
        raise UserError(f'checkpoint {path} {what}: pass the path of a .pt file')
    if os.path.isfile(path + CHECKSUM_SUFFIX):
        with open(path + CHECKSUM_SUFFIX) as f:
            expected = f.read().split(' ')[0].strip()
        if sha256_file(path) != expected:
            raise UserError(f'checkpoint {path} is corrupt: its sha256 differs from the checksum in {path}'
                            f'{CHECKSUM_SUFFIX} written with it; copy both files again or pass another file (delete '
                            'the .sha256 file only if the checkpoint was replaced on purpose)')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
        if m is None and not zipfile.is_zipfile(path):
            with open(path, 'rb') as f:  # pickle protocol 2, then the 10-byte long of torch's legacy magic number
                legacy = f.read(4) == b'\x80\x02\x8a\x0a'
            if not legacy:
                raise UserError(f'checkpoint {path} is corrupt or truncated: it is not a PyTorch checkpoint file '
                                f'(neither a torch.save zip archive nor a legacy one); copy it again or pass another '
                                f'file') from None
        needs = f'needs the pickled code {m.group(1)}' if m else 'is not a plain tensor/dict checkpoint'
        raise UserError(f'checkpoint {path} was refused: it {needs}, which torch.load(weights_only=True) never '
                        f'executes (nothing in it was run); re-save only its tensors (model.state_dict()) from a '
                        f'trusted copy') from None
    except (RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0].split('. ')[0].rstrip('.') if str(e).strip() else 'the file ends early'
        raise UserError(f'checkpoint {path} is corrupt or truncated ({first}); copy it again or pass another '
                        f'file') from None


def is_safetensors(path):
    return os.fspath(path).endswith(SAFETENSORS_SUFFIX)


def import_safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise UserError('reading or writing .safetensors needs the safetensors package: pip install safetensors '
                        '(or use a .pt file).') from None
    return safetensors


def read_safetensors(path, key='model_state_dict'):
    """The one model of a .safetensors file (CPU tensors); --unaveraged weights are exported to files of their own."""
    st = import_safetensors()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f'{path} does not exist: pass the path of a .safetensors file.')
    if key != 'model_state_dict':
        raise UserError(f'{path} holds one model (a .safetensors export); {key} cannot be chosen from it: drop '
                        '--unaveraged, or export the unaveraged weights with scripts/export.py --unaveraged.')
    try:
        with st.safe_open(path, framework='pt') as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError for a truncated or foreign file
        raise UserError(f'{path} is not a readable .safetensors file: {str(e).splitlines()[0]}') from None


def safetensors_metadata(path):
    st = import_safetensors()
    with st.safe_open(os.fspath(path), framework='pt') as f:
        return dict(f.metadata() or {})


def load_weights(path, key='model_state_dict', map_location='cpu'):
    """The one weights loader of every script: a .safetensors export, `ckpt[key]` of a checkpoint dict
    (`model_state_dict`, `unaveraged_model_state_dict`, without_DDPM's `state_dict`) or a bare state dict."""
    if is_safetensors(path):
        return read_safetensors(path, key)
    ckpt = load_checkpoint(path, map_location=map_location)
    if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
        return ckpt[key]
    unaveraged = key == 'unaveraged_model_state_dict'
    if not unaveraged and isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    found = ', '.join(map(str, list(ckpt)[:5])) if isinstance(ckpt, dict) else type(ckpt).__name__
    if unaveraged:
        raise UserError(f'checkpoint {path} holds no {key!r} (found {found}): a run without weight averaging has '
                        f'only model_state_dict; drop --unaveraged')
    raise UserError(f'checkpoint {path} holds neither a {{{key!r}: state_dict}} dict nor a state dict of tensors '
                    f'(found {found}): pass a weights file written by this project or a torch.save(state_dict)')
