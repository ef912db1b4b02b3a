"""Checkpoint I/O (docs/differences.md item 36): reference key layout, prefix variants, mismatch messages, safe and
atomic files."""
import os

import pytest
import torch
import torch.nn as nn

from core.models import create_model
from core.utils.checkpoint import (
    canonical_state_dict,
    describe_state_dict,
    load_checkpoint,
    load_state_dict,
    load_weights,
    save_atomic,
    unwrap_model,
)
from core.utils.errors import UserError

INFO = dict(data='cifar10s', num_classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))
NAME = 'wrn-10-2-swish'


def trained_like(name=NAME, normalize=False, seed=0, info=INFO):
    """A model with non-default weights and BN statistics (one train-mode forward), in eval mode."""
    torch.manual_seed(seed)
    model = create_model(name, normalize, info, 'cpu')
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        model.train()
        model(torch.rand(4, 3, 32, 32))
    return model.eval()


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


class Compiled(nn.Module):
    """Stands in for torch.compile's OptimizedModule (same `_orig_mod` attribute and key prefix), without dynamo."""

    def __init__(self, model):
        super().__init__()
        self._orig_mod = model

    def forward(self, x):
        return self._orig_mod(x)


def strip(sd, n):
    return {k[n:]: v for k, v in sd.items()}


@pytest.mark.parametrize('normalize,prefix', [(False, 'module.0.'), (True, 'module.1.')])
def test_reference_layout_loads_strict_and_gives_identical_logits(normalize, prefix):
    source = trained_like(normalize=normalize, seed=0)
    sd = source.state_dict()
    assert all(k.startswith(prefix) for k in sd)  # the reference's DataParallel layout
    target = create_model(NAME, normalize, INFO, 'cpu')
    x = torch.rand(3, 3, 32, 32)
    assert not torch.equal(logits(target, x), logits(source, x))
    assert load_state_dict(target, sd) is target
    assert torch.equal(logits(target, x), logits(source, x))
    for k, v in sd.items():
        assert torch.equal(target.state_dict()[k], v)


def variants(sd):
    """The same weights under the prefixes other tools write (sd is in the `module.0.` layout)."""
    return {
        'sequential (no prefix)': strip(sd, len('module.')),
        'bare backbone': strip(sd, len('module.0.')),
        'DataParallel/DDP around the wrapper': {'module.' + k: v for k, v in sd.items()},
        'torch.compile': {'_orig_mod.' + k: v for k, v in sd.items()},
        'DDP around torch.compile': {'module._orig_mod.' + k: v for k, v in sd.items()},
        'DataParallel of a bare backbone': {'module.' + k: v for k, v in strip(sd, len('module.0.')).items()},
    }


def test_prefix_variants_load():
    source = trained_like(seed=1)
    x = torch.rand(2, 3, 32, 32)
    expected = logits(source, x)
    for what, sd in variants(source.state_dict()).items():
        target = create_model(NAME, False, INFO, 'cpu')
        load_state_dict(target, sd)
        assert torch.equal(logits(target, x), expected), what
        assert list(canonical_state_dict(sd)) == list(source.state_dict()), what


def test_bare_backbone_keys_go_behind_the_normalization_layer():
    source = trained_like(normalize=True, seed=2)
    bare = strip(source.state_dict(), len('module.1.'))
    assert list(canonical_state_dict(bare, backbone_index=1)) == list(source.state_dict())
    target = create_model(NAME, True, INFO, 'cpu')
    load_state_dict(target, bare)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(logits(target, x), logits(source, x))


def test_load_into_wrapped_models():
    source = trained_like(seed=3)
    x = torch.rand(2, 3, 32, 32)
    for wrap in (nn.DataParallel, Compiled, lambda m: nn.DataParallel(Compiled(m))):
        inner = create_model(NAME, False, INFO, 'cpu')
        wrapped = wrap(inner)
        assert unwrap_model(wrapped) is inner
        load_state_dict(wrapped, source.state_dict())
        assert torch.equal(logits(inner, x), logits(source, x))
    model = create_model(NAME, False, INFO, 'cpu')
    assert unwrap_model(model) is model  # the wrapper's own `.module` is kept


@pytest.mark.slow
def test_unwrap_real_torch_compile():
    model = create_model('wrn-10-1-swish', False, INFO, 'cpu')
    compiled = torch.compile(model)
    assert unwrap_model(compiled) is model
    assert all(k.startswith('_orig_mod.module.0.') for k in compiled.state_dict())
    load_state_dict(model, compiled.state_dict())


def one_line_error(model, sd, source='run/weights-best.pt'):
    with pytest.raises(UserError) as info:
        load_state_dict(model, sd, source=source)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_architecture_mismatch_names_both():
    sd = trained_like().state_dict()
    message = one_line_error(create_model('wrn-16-2-swish', False, INFO, 'cpu'), sd)
    assert message.startswith('checkpoint run/weights-best.pt holds a wrn-10-2-swish (10 classes) '
                              'but --model is wrn-16-2-swish (10 classes): ')
    message = one_line_error(create_model(NAME, False, dict(INFO, num_classes=100), 'cpu'), sd)
    assert 'holds a wrn-10-2-swish (10 classes) but --model is wrn-10-2-swish (100 classes)' in message
    message = one_line_error(create_model('wrn-10-2', False, INFO, 'cpu'), sd)
    assert 'holds a wrn-10-2-swish (10 classes) but --model is wrn-10-2 (10 classes)' in message
    message = one_line_error(create_model('wrn-10-4-swish', True, INFO, 'cpu'), sd)  # both differ: arch first
    assert 'holds a wrn-10-2-swish (10 classes) but --model is wrn-10-4-swish (10 classes)' in message


def test_normalize_mismatch_is_named():
    sd = trained_like(normalize=False).state_dict()
    message = one_line_error(create_model(NAME, True, INFO, 'cpu'), sd)
    assert 'saved with --normalize False' in message and 'pass --normalize False' in message


def test_missing_tensor_is_reported():
    sd = dict(trained_like().state_dict())
    del sd['module.0.batchnorm.num_batches_tracked']
    message = one_line_error(create_model(NAME, False, INFO, 'cpu'), sd)
    assert '1 missing keys (e.g. module.0.batchnorm.num_batches_tracked)' in message


@pytest.mark.parametrize('name,info,expected', [
    ('wrn-28-10-swish', INFO, 'a wrn-28-10-swish (10 classes)'),
    ('wrn-70-16-swish', dict(INFO, num_classes=100), 'a wrn-70-16-swish (100 classes)'),
    ('wrn-34-10', INFO, 'a wrn-34-10 (10 classes)'),
    ('preact-resnet18', INFO, 'a preact-resnet18 (10 classes)'),
    ('preact-resnet101', INFO, 'a preact-resnet101 (10 classes)'),
    ('resnet50', INFO, 'a resnet50 (10 classes)'),
    ('preact-resnet34-swish', INFO, 'a preact-resnet34-swish (10 classes)'),
    ('preact-resnet18', dict(INFO, data='tiny-imagenet', num_classes=200), 'a preact-resnet18 (200 classes)'),
])
def test_describe_state_dict(name, info, expected):
    with torch.device('meta'):
        sd = create_model(name, True, info, 'meta').state_dict()
    for variant in (sd, strip(sd, len('module.1.')), {'module.' + k: v for k, v in sd.items()}):
        assert describe_state_dict(variant) == expected


def test_describe_unknown():
    sd = {'a.weight': torch.zeros(2), 'b.weight': torch.zeros(2), 'c': torch.zeros(1)}
    assert describe_state_dict(sd) == 'a different architecture (3 tensors)'


class Payload:
    """A pickled object whose unpickling would create a file: loading it must never run this."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickled_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / 'executed'
    path = tmp_path / 'evil.pt'
    torch.save({'model_state_dict': {'w': torch.zeros(1)}, 'payload': Payload(str(marker))}, path)
    assert not marker.exists()
    for load in (load_checkpoint, load_weights):
        with pytest.raises(UserError, match='refused.*never executes') as info:
            load(path)
        assert str(path) in str(info.value) and '\n' not in str(info.value)
    assert not marker.exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match=f'{tmp_path / "nope.pt"} does not exist'):
        load_checkpoint(tmp_path / 'nope.pt')
    with pytest.raises(UserError, match='is a directory'):
        load_checkpoint(tmp_path)
    (tmp_path / 'broken.pt').write_bytes(b'not a checkpoint at all')
    with pytest.raises(UserError, match='broken.pt is corrupt or truncated'):
        load_checkpoint(tmp_path / 'broken.pt')


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'truncated-legacy', 'empty'])
def test_corrupt_or_truncated_file_is_named_so_not_pickled_code(tmp_path, damage):
    """A file that is no PyTorch checkpoint at all says 'corrupt or truncated', not 'refused ... pickled code'."""
    good = tmp_path / 'good.pt'
    torch.save({'model_state_dict': {'w': torch.zeros(100)}}, good,
               _use_new_zipfile_serialization=damage != 'truncated-legacy')
    data = good.read_bytes()
    bad = tmp_path / 'weights-best.pt'
    bad.write_bytes({'garbage': bytes(range(256)) * 4, 'empty': b''}.get(damage, data[:len(data) // 2]))
    for load in (load_checkpoint, load_weights):
        with pytest.raises(UserError) as info:
            load(bad)
        msg = str(info.value)
        assert msg.startswith(f'checkpoint {bad} is corrupt or truncated') and '\n' not in msg
        assert 'pickled code' not in msg and 'refused' not in msg


def test_save_atomic_round_trip_and_overwrite(tmp_path):
    path = tmp_path / 'weights-last.pt'
    first = {'model_state_dict': {'w': torch.arange(3.0)}, 'epoch': 1}
    save_atomic(first, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded['model_state_dict']['w'], torch.arange(3.0)) and loaded['epoch'] == 1
    save_atomic({'model_state_dict': {'w': torch.ones(2)}, 'epoch': 2}, str(path))
    assert load_checkpoint(path)['epoch'] == 2
    assert sorted(os.listdir(tmp_path)) == ['weights-last.pt', 'weights-last.pt.sha256']  # no temporary file left


class SaveFailed(Exception):
    pass


class FailsWhenSaved:
    """An object whose pickling fails half-way through torch.save (a crash mid-save)."""

    def __reduce__(self):
        raise SaveFailed('simulated crash')


def test_save_atomic_gives_the_usual_permissions(tmp_path):
    """A checkpoint is readable as any file the user writes (0666 minus the umask), not mkstemp's 0600."""
    import stat
    umask = os.umask(0o022)
    try:
        save_atomic({'epoch': 1}, tmp_path / 'weights-last.pt')
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / 'weights-last.pt').st_mode) == 0o644


def test_save_atomic_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / 'weights-last.pt'
    save_atomic({'epoch': 1}, path)
    with pytest.raises(SaveFailed):
        save_atomic({'epoch': 2, 'weights': torch.ones(1000), 'bad': FailsWhenSaved()}, path)
    assert load_checkpoint(path) == {'epoch': 1}
    assert sorted(os.listdir(tmp_path)) == ['weights-last.pt', 'weights-last.pt.sha256']


def test_load_weights(tmp_path):
    model = trained_like(seed=4)
    sd = model.state_dict()
    save_atomic({'model_state_dict': sd, 'unaveraged_model_state_dict': {}}, tmp_path / 'weights-best.pt')
    torch.save(sd, tmp_path / 'bare.pt')
    for name in ('weights-best.pt', 'bare.pt'):
        weights = load_weights(tmp_path / name)
        assert list(weights) == list(sd) and all(torch.equal(weights[k], sd[k]) for k in sd)
    target = create_model(NAME, False, INFO, 'cpu')
    load_state_dict(target, load_weights(tmp_path / 'weights-best.pt'), source='weights-best.pt')
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(logits(target, x), logits(model, x))
    torch.save({'epoch': 3, 'args': {'model': NAME}}, tmp_path / 'other.pt')
    with pytest.raises(UserError, match="neither a {'model_state_dict'"):
        load_weights(tmp_path / 'other.pt')


def test_load_weights_picks_the_state_dict_asked_for(tmp_path):
    """The key decides: unaveraged weights only from a checkpoint holding them (never a bare state dict, which holds
    one model), without_DDPM's {'state_dict': ...}, and a .safetensors export holds one model."""
    averaged, trained = {'w': torch.zeros(2)}, {'w': torch.ones(2)}
    save_atomic({'model_state_dict': averaged, 'unaveraged_model_state_dict': trained}, tmp_path / 'wa.pt')
    save_atomic({'model_state_dict': averaged}, tmp_path / 'plain.pt')
    torch.save(averaged, tmp_path / 'bare.pt')
    torch.save({'state_dict': trained, 'test_acc': 0.5}, tmp_path / 'model_best.pth')
    assert torch.equal(load_weights(tmp_path / 'wa.pt', 'unaveraged_model_state_dict')['w'], torch.ones(2))
    assert torch.equal(load_weights(tmp_path / 'model_best.pth', 'state_dict')['w'], torch.ones(2))
    assert torch.equal(load_weights(tmp_path / 'bare.pt', 'state_dict')['w'], torch.zeros(2))
    for name in ('plain.pt', 'bare.pt'):
        with pytest.raises(UserError, match="holds no 'unaveraged_model_state_dict'.*drop --unaveraged") as info:
            load_weights(tmp_path / name, 'unaveraged_model_state_dict')
        assert str(tmp_path / name) in str(info.value)
    pytest.importorskip('safetensors')
    from core.run.export import write_safetensors
    write_safetensors(averaged, str(tmp_path / 'one.safetensors'))
    assert torch.equal(load_weights(tmp_path / 'one.safetensors')['w'], torch.zeros(2))
    with pytest.raises(UserError, match='holds one model'):
        load_weights(tmp_path / 'one.safetensors', 'unaveraged_model_state_dict')


def test_no_import_cycle_in_core():
    """No module of core/ imports, at module level or inside a function, one that imports it back (directly or
    through others): the weights loader (checkpoint.py) reads .safetensors itself instead of importing export.py,
    which imports it. Tarjan's strongly connected components over the `import` statements of every core/ file."""
    import ast
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = {}
    for folder, _, names in os.walk(os.path.join(root, 'core')):
        for name in names:
            if name.endswith('.py'):
                module = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, '.')
                files[module.removesuffix('.__init__')] = os.path.join(folder, name)
    graph = {}
    for module, path in files.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.update([node.module] + [f'{node.module}.{a.name}' for a in node.names])
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        graph[module] = sorted(m for m in imported if m in files and m != module)
    order, low, stack, cycles = {}, {}, [], []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in order:
            visit(v)
    assert cycles == []
    assert 'core.run.export' not in graph['core.utils.checkpoint']
