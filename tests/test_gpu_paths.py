"""The CUDA / DDP / compile code paths, shown on the CPU where the CPU can show them (GPU readiness).

CUDA calls are replaced by recorders (monkeypatch) to show WHICH device's state is saved and restored and how a
rank picks its GPU; tests marked `cuda` run the real thing and are skipped without a GPU. bench/gpu_check.py
covers the rest on a GPU host.
"""
import random
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from train_helpers import make_data_dir, run, tiny_args

from core.utils import distributed
from core.utils.checkpoint import save_atomic, to_cpu
from core.utils.rng import rng_state, set_rng_state


@pytest.fixture(scope='module')
def train_data(tmp_path_factory):
    """The synthetic data folder of the train-wa.py end-to-end tests (train_helpers.make_data_dir)."""
    return make_data_dir(tmp_path_factory)


def _forbid_cuda(monkeypatch):
    def boom(*a, **k):
        raise AssertionError('CUDA touched by a CPU run')
    for name in ('get_rng_state', 'set_rng_state', 'get_rng_state_all', 'set_rng_state_all', 'init', 'set_device'):
        monkeypatch.setattr(torch.cuda, name, boom)


def _draws():
    return torch.rand(3), np.random.rand(3), random.random()


# ------------------------------------------------------------------ item 3: RNG state of the run's device only
def test_cpu_run_saves_and_restores_rng_without_touching_cuda(monkeypatch):
    _forbid_cuda(monkeypatch)
    state = rng_state(torch.device('cpu'))
    assert state['cuda'] == []
    first = _draws()
    old_format = dict(state, cuda=[torch.zeros(8, dtype=torch.uint8)] * 2)  # a GPU host's file, all GPUs
    set_rng_state(old_format, torch.device('cpu'))
    again = _draws()
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


class CudaRngRecorder:
    """torch.cuda.get_rng_state / set_rng_state stand-ins: the state of cuda:i is tensor([i])."""

    def __init__(self, monkeypatch):
        self.set_calls = []
        monkeypatch.setattr(torch.cuda, 'get_rng_state', lambda device: torch.tensor([device.index]))
        monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda s, device: self.set_calls.append((int(s), device)))
        monkeypatch.setattr(torch.cuda, 'get_rng_state_all', None)  # never the all-GPU variants
        monkeypatch.setattr(torch.cuda, 'set_rng_state_all', None)


def test_cuda_run_saves_and_restores_its_own_device_only(monkeypatch):
    rec = CudaRngRecorder(monkeypatch)
    dev = torch.device('cuda', 1)
    state = rng_state(dev)
    assert [int(s) for s in state['cuda']] == [1]
    set_rng_state(state, torch.device('cuda', 0))  # a resume that got another GPU: the saved stream
    assert rec.set_calls == [(1, torch.device('cuda', 0))]


def test_old_state_files_with_all_gpus_still_resume(monkeypatch):
    rec = CudaRngRecorder(monkeypatch)
    old = dict(rng_state(torch.device('cpu')), cuda=[torch.tensor([10]), torch.tensor([11]), torch.tensor([12])])
    set_rng_state(old, torch.device('cuda', 1))
    assert rec.set_calls == [(11, torch.device('cuda', 1))]
    with pytest.warns(UserWarning, match='not restored'):  # fewer saved GPUs than this index: said, not hidden
        set_rng_state(dict(old, cuda=old['cuda'][:2]), torch.device('cuda', 5))
    assert len(rec.set_calls) == 1


# ------------------------------------------------------------------ item 4: one visible GPU per rank
@pytest.mark.parametrize('visible, expected', [(1, 0), (4, 3), (2, 1)])
def test_setup_picks_local_rank_modulo_visible_gpus_and_binds_the_group(monkeypatch, visible, expected):
    calls = {}
    monkeypatch.setenv('WORLD_SIZE', '4')
    monkeypatch.setenv('RANK', '3')
    monkeypatch.setenv('LOCAL_RANK', '3')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: visible)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda d: calls.setdefault('set_device', d))
    monkeypatch.setattr(distributed.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(distributed.dist, 'init_process_group', lambda **kw: calls.setdefault('init', kw))
    runtime = distributed.setup('cuda', 'none')
    assert runtime.device == torch.device('cuda', expected) and runtime.rank == 3 and runtime.world_size == 4
    assert calls['set_device'] == torch.device('cuda', expected)
    assert calls['init'] == {'backend': 'nccl', 'device_id': torch.device('cuda', expected),
                             'timeout': distributed.DDP_TIMEOUT}   # a dead peer fails a collective, no hang


# ------------------------------------------------------------------ item 13: checkpoints hold CPU tensors
def test_to_cpu_keeps_structure_and_state_dict_metadata(tmp_path):
    sd = nn.BatchNorm2d(2).state_dict()
    obj = {'model': sd, 'rows': [{'a': 1.0}], 'pair': (torch.ones(2), 'x'), 'n': 3}
    out = to_cpu(obj)
    assert isinstance(out['model'], OrderedDict) and out['model']._metadata == sd._metadata
    assert out['pair'][1] == 'x' and out['n'] == 3 and out['rows'] == [{'a': 1.0}]
    save_atomic(obj, tmp_path / 'c.pt')
    back = torch.load(tmp_path / 'c.pt', weights_only=True)  # no map_location
    assert all(torch.equal(back['model'][k], sd[k]) for k in sd) and back['model']._metadata == sd._metadata


@pytest.mark.cuda
def test_cuda_tensors_are_saved_as_cpu_tensors(tmp_path):
    model = nn.Linear(3, 2).cuda()
    save_atomic({'model': model.state_dict(), 'rng': [torch.cuda.get_rng_state()]}, tmp_path / 'c.pt')
    back = torch.load(tmp_path / 'c.pt', weights_only=True)
    assert all(t.device.type == 'cpu' for t in back['model'].values())
    assert torch.equal(back['model']['weight'], model.weight.detach().cpu())


@pytest.mark.cuda
def test_cuda_rng_round_trip_on_the_run_device():
    dev = torch.device('cuda', torch.cuda.current_device())
    state = rng_state(dev)
    a = torch.rand(4, device=dev)
    set_rng_state(state, dev)
    assert torch.equal(a, torch.rand(4, device=dev))



# ------------------------------------------------------------------ items 5 and 9: APGD training attacks
@pytest.mark.parametrize('attack', ['l2-apgd', 'linf-apgd'])
def test_apgd_takes_channels_last_models_and_batches(attack):
    from core.attacks import create_attack
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 3, (4,))
    expected = create_attack(model, nn.CrossEntropyLoss(), attack, 0.5, 0.1, 3)(x, y)
    model = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got = create_attack(model, nn.CrossEntropyLoss(), attack, 0.5, 0.1, 3)(x_cl, y)  # crashed: .view
    assert torch.allclose(got, expected, atol=1e-5)


class _Stop(Exception):
    pass


@pytest.mark.parametrize('attack, expected', [('l2-apgd', False), ('linf-apgd', False), ('linf-pgd', True)])
def test_cudnn_benchmark_is_off_for_apgd_training_attacks(train_data, tmp_path, monkeypatch, attack, expected):
    """train-wa.py decides cudnn.benchmark at device setup; the run is stopped when it starts loading data."""
    import core.data
    seen = []

    def stop(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        raise _Stop
    monkeypatch.setattr(core.data, 'load_data', stop)
    torch.backends.cudnn.benchmark = not expected
    with pytest.raises(_Stop):
        run(tiny_args(train_data, tmp_path, 'x', '--tau', '0', '--attack', attack, data='cifar10'))
    assert seen == [expected]


# ------------------------------------------------------------------ item 8: eval-aa.py freezes the parameters
def test_eval_aa_attacks_a_model_with_frozen_parameters(tmp_path, capsys, monkeypatch, one_thread):
    from test_eval_aa import FakeOfficialAutoAttack, make_run, released_args, run_cli

    import core.attacks.autoattack as aa
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    data_root, log_root, desc, *_ = make_run(tmp_path, released_args(attack_eps=0.5))
    code, _, err = run_cli(['--data-dir', data_root, '--log-dir', log_root, '--desc', desc, '--num-samples', '3',
                            '--batch-size', '2'], capsys)
    assert code == 0, err
    model = FakeOfficialAutoAttack.created[-1].model
    assert not any(p.requires_grad for p in model.parameters())  # FAB-T's backward computes no weight grads


# ------------------------------------------------------------------ items 6 and 7: compile / DDP wrappers
def _trainer(*flags):
    from core.data import get_data_info
    from core.run.parser import parser_train
    from gowal21uncovering.utils.watrain import WATrainer
    args = parser_train().parse_args(['--desc', 'x', '--model', 'wrn-10-1-swish', '--num-adv-epochs', '2',
                                      '--attack-iter', '2', '--batch-size', '4'] + list(flags))
    return WATrainer(get_data_info('./data/cifar10s'), args)


@pytest.mark.parametrize('flags', [('--beta', '6'), ('--beta', '6', '--mart')])
def test_compiled_training_model_traces_two_graphs_and_attacks_run_eager(monkeypatch, flags):
    """torch.compile'd training model: one graph per BatchNorm momentum of the WA trick (1.0 at step 0, then 0.01),
    none for the last smaller batch (symbolic batch size) and none for the attack, which runs on the eager module
    (through the compiled one it added grad-mode / requires_grad / batch-statistics / eval-mode variants)."""
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    counter, compile_ = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, 'compile', lambda m, **kw: compile_(m, backend=counter))
    trainer = _trainer('--compile', *flags)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (4, 4, 3)]
    metrics = trainer.train(batches, epoch=1)
    assert counter.frame_count == 2
    assert all(v == v for v in metrics.values())  # not NaN


@pytest.mark.parametrize('loss', ['trades', 'lse', 'mart', 'plain-trades'])
def test_under_ddp_only_the_two_training_forwards_go_through_the_wrapper(tmp_path, loss):
    """The attack's T forwards run on the module inside DistributedDataParallel (no buffer broadcast each);
    z_nat and z_adv go through the wrapper. A 1-process gloo group shows it on the CPU."""
    import torch.distributed as dist
    from composites import mart_loss, trades_loss, trades_loss_LSE, trades_loss_plain
    fn = {'trades': trades_loss, 'lse': lambda *a, **k: trades_loss_LSE(*a, num_classes=3, **k), 'mart': mart_loss,
          'plain-trades': trades_loss_plain}[loss]
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        inner = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(4, 3))
        ddp = nn.parallel.DistributedDataParallel(inner)
        outer, total = [], []
        ddp.register_forward_hook(lambda *a: outer.append(1))
        inner.register_forward_hook(lambda *a: total.append(1))
        x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 3, (6,))
        out, _ = fn(ddp, x, y, step_size=2 / 255, epsilon=8 / 255, perturb_steps=3, beta=6.0)
        out.backward()
    finally:
        dist.destroy_process_group()
    extra = 1 if loss == 'plain-trades' else 0  # its eval-mode target forward
    assert len(outer) == 2 and len(total) == 2 + 3 + extra


# ------------------------------------------------------------------ item 10: no host synchronisation per step
def test_attack_noise_is_the_reference_cpu_draw():
    from core.attacks.utils import cpu_draw
    torch.manual_seed(7)
    expected = (torch.randn(2, 3, 4, 4, dtype=torch.float32), torch.empty(5).uniform_(-0.1, 0.1))
    torch.manual_seed(7)
    got = (cpu_draw((2, 3, 4, 4), 'cpu', lambda t: t.normal_()), cpu_draw((5,), 'cpu', lambda t: t.uniform_(-0.1, 0.1)))
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def _meta_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).to('meta')


@pytest.mark.parametrize('attack', ['linf-pgd', 'l2-pgd'])
def test_training_attack_loops_never_ask_the_host(attack):
    """On the meta device every host synchronisation (`.item()`, `if tensor.any()`) raises: the TRADES / LSE and
    MART loops run through, so on a GPU they queue their steps without waiting (the L2 loop's zero-norm check
    used to synchronise every step)."""
    from core.attacks.trades import MartInnerMax, TradesInnerMax
    model, x = _meta_net(), torch.empty(4, 3, 8, 8, device='meta')
    p, y = torch.empty(4, 3, device='meta'), torch.zeros(4, dtype=torch.long, device='meta')
    for divergence in ('kl', 'lse'):
        assert TradesInnerMax(model, divergence, attack, eps=0.5, iters=2)(x, p).device.type == 'meta'
    assert MartInnerMax(model, iters=2)(x, y).device.type == 'meta'
    with pytest.raises(RuntimeError):  # the check is real: a host read fails on meta
        bool((x == 0).any())


@pytest.mark.cuda
@pytest.mark.parametrize('attack', ['linf-pgd', 'l2-pgd'])
def test_cuda_training_attacks_do_not_synchronise(attack):
    from core.attacks.trades import TradesInnerMax
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).cuda()
    x, p = torch.rand(4, 3, 8, 8, device='cuda'), torch.full((4, 3), 1 / 3, device='cuda')
    TradesInnerMax(model, 'kl', attack, eps=0.5, iters=1)(x, p)  # warm-up (allocations, pinned pool)
    torch.cuda.set_sync_debug_mode('error')
    try:
        for amp in (False, True):
            with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
                TradesInnerMax(model, 'kl', attack, eps=0.5, iters=2)(x, p)
    finally:
        torch.cuda.set_sync_debug_mode('default')


# ------------------------------------------------------------------ item 11: per-rank evaluation batches
@pytest.mark.parametrize('n', [0, 5, 16, 17])
@pytest.mark.parametrize('world', [1, 2, 3])
def test_rank_batches_give_every_batch_to_exactly_one_rank(n, world):
    from core.data.common import RankBatches
    unsharded = [list(range(s, min(s + 4, n))) for s in range(0, n, 4)]
    shares = [list(RankBatches(n, 4, r, world)) for r in range(world)]
    assert [len(s) for s in shares] == [len(RankBatches(n, 4, r, world)) for r in range(world)]
    assert all(shares[i % world][i // world] == b for i, b in enumerate(unsharded))
    assert sum(len(s) for s in shares) == len(unsharded)


def test_evaluate_takes_a_per_rank_loader_as_this_ranks_share(tmp_path):
    """Rank 1 of 2 gets batch 1 only (images 4-7) and counts it (a per-rank loader is not skipped again)."""
    import torch.distributed as dist

    from core.data.common import eval_loader
    from core.training.trainer import evaluate, to_device
    images = torch.arange(10.0).view(10, 1)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(10, dtype=torch.long))
    loader = eval_loader(dataset, 4, 0, False, rank=1, world_size=2)
    assert [x.view(-1).tolist() for x, _ in loader] == [[4.0, 5.0, 6.0, 7.0]]
    seen = []
    model = nn.Linear(1, 2)
    model.register_forward_hook(lambda m, inp, out: seen.append(inp[0].view(-1).tolist()))
    runtime = distributed.Runtime(torch.device('cpu'), rank=1, world_size=2)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        evaluate(model, loader, runtime, lambda x, y: to_device(x, y, runtime.device))
    finally:
        dist.destroy_process_group()
    assert seen == [[4.0, 5.0, 6.0, 7.0]]


@pytest.mark.cuda
def test_cuda_run_resumes_on_cuda_and_on_cpu(train_data, tmp_path):
    """A CUDA run's state file (CPU tensors, the run device's RNG) resumes on CUDA and with --device cpu; cuDNN
    makes GPU runs not bit-identical, so only completion and finite weights are checked."""
    import shutil
    flags = ('--beta', '6', '--stop-after', '1')
    assert run(tiny_args(train_data, tmp_path, 'gpu', '--device', 'cuda', *flags)) == 0
    shutil.copytree(tmp_path / 'gpu', tmp_path / 'gpu-cpu')
    assert run(tiny_args(train_data, tmp_path, 'gpu', '--device', 'cuda', '--beta', '6', '--resume')) == 0
    assert run(tiny_args(train_data, tmp_path, 'gpu-cpu', '--device', 'cpu', '--beta', '6', '--resume')) == 0
    for desc in ('gpu', 'gpu-cpu'):
        sd = torch.load(tmp_path / desc / 'weights-last.pt', weights_only=True)['model_state_dict']
        assert all(t.device.type == 'cpu' and torch.isfinite(t.float()).all() for t in sd.values())
