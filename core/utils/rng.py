"""One process's RNG states for bit-identical resumes, CUDA only the run's device (docs/differences.md items 34, 45)."""
import random
import warnings

import numpy as np
import torch


def rng_state(device=torch.device('cpu')):
    """Tensors, lists and numbers (what weights_only=True loads); 'cuda' is [`device`'s state] or []."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    device = torch.device(device)
    return {'torch': torch.get_rng_state(),
            'cuda': [torch.cuda.get_rng_state(device)] if device.type == 'cuda' else [],
            'numpy': {'name': name, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                      'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
            'python': {'version': version, 'internal': list(internal), 'gauss_next': gauss_next}}


def set_rng_state(state, device=torch.device('cpu')):
    """Restore `rng_state`'s output; of a longer 'cuda' list (older files: every GPU) `device`'s entry, or a warning."""
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
