"""The random-number-generator states of one process, for bit-identical resumes (`state-last.pt`, key 'rng'; the
original's resume restored none, docs/differences.md items 34 and 45).

torch's CPU generator, numpy's and Python's always; the CUDA generator of the run's own device only, and only
when the run uses CUDA: a `--device cpu` run never touches CUDA (no context is opened on a GPU host), and a
resume never indexes GPUs that another allocation may not have.
"""
import random
import warnings

import numpy as np
import torch

__all__ = ['rng_state', 'set_rng_state']


def rng_state(device=torch.device('cpu')):
    """The RNG states of this process as tensors, lists and numbers (what `torch.load(weights_only=True)` reads).

    'cuda' is [the state of `device`] on CUDA, [] otherwise (files of older versions hold one state per
    visible GPU there; `set_rng_state` reads both).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    device = torch.device(device)
    return {'torch': torch.get_rng_state(),
            'cuda': [torch.cuda.get_rng_state(device)] if device.type == 'cuda' else [],
            'numpy': {'name': name, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                      'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
            'python': {'version': version, 'internal': list(internal), 'gauss_next': gauss_next}}


def set_rng_state(state, device=torch.device('cpu')):
    """Restore `rng_state`'s output. The CUDA state goes to `device` only, and only if it is a CUDA device.

    A one-element 'cuda' list is the saved device's state. A longer list comes from an older file (every visible
    GPU): the entry of `device`'s index is taken; if that GPU was not in the list, the CUDA stream is left as
    it is and a warning says so (the CPU, numpy and Python streams, which draw the attack noise, are restored).
    """
    torch.set_rng_state(state['torch'])
    device = torch.device(device)
    cuda = state.get('cuda') or []
    if device.type == 'cuda' and cuda:
        index = 0 if len(cuda) == 1 else (device.index if device.index is not None else torch.cuda.current_device())
        if index < len(cuda):
            torch.cuda.set_rng_state(cuda[index], device)
        else:
            warnings.warn(f'resume: the saved CUDA RNG states cover {len(cuda)} GPUs, not {device}; its CUDA '
                          f'random stream is not restored.', stacklevel=2)
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(p['internal']), p['gauss_next']))
