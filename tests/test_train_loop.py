"""AdversarialTrainer.train's bookkeeping on a fake loss (no attack): the epoch means, the non-finite stop, the LR
rescale; the builder's wiring.

Checked against numbers written down by hand: per-batch accuracies are float32 divisions as the reference's
`correct.float() / float(B)` (3 of 7 is float32(3) / float32(7), not 3 / 7), the epoch figure is the mean over the
batches of those values; a NaN or inf loss stops the epoch naming its epoch and 1-based batch.
"""
import math
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.data import get_data_info  # noqa: E402
from core.run.parser import parser_train  # noqa: E402
from core.training.builder import Trainer  # noqa: E402
from core.training.epoch_metrics import EpochMetrics, NonFiniteLoss  # noqa: E402
from core.utils.errors import UserError  # noqa: E402
from core.utils.metrics import accuracy, batch_accuracy  # noqa: E402


def test_batch_accuracy_is_a_float32_division():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 2, 0, 1]), 3).float()   # 3 of 7 right
    acc = batch_accuracy(y, logits)
    assert acc.dtype == torch.float32 and acc.dim() == 0
    assert acc.item() == float(np.float32(3) / np.float32(7)) == 0.4285714328289032
    assert accuracy(y, logits) == 0.4285714328289032 != 3 / 7


class FakeLoss:
    """Batch b (1-based) has loss values[b-1] and accuracies correct[b-1] / batch size, from a linear model."""

    def __init__(self, trainer, losses, correct):
        self.trainer, self.losses, self.correct, self.b = trainer, losses, correct, 0

    def __call__(self, x, y):
        self.b += 1
        out = self.trainer.train_model(x)
        value = self.losses[self.b - 1]
        loss = out.sum() * 0 + value                        # a graph to the parameters, the value we want
        k = self.correct[self.b - 1]
        preds = torch.nn.functional.one_hot(torch.where(torch.arange(len(y)) < k, y, (y + 1) % 10), 10).float()
        return loss, {'loss': loss.detach(), 'clean_acc': batch_accuracy(y, preds),
                      'adversarial_acc': batch_accuracy(y[:1], preds[:1])}


def make_trainer(*flags):
    args = parser_train().parse_args(['--desc', 'x', '--model', 'wrn-10-1-swish', '--num-adv-epochs', '3',
                                      '--tau', '0', '--lr', '0.1'] + list(flags))
    return Trainer(get_data_info('./data/cifar10'), args)


def batches(sizes):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]


def test_epoch_means_of_float32_batch_accuracies():
    trainer = make_trainer()
    sizes, correct, losses = [7, 7, 3], [3, 5, 1], [0.5, 0.25, 2.0]
    trainer.loss = FakeLoss(trainer, losses, correct)
    loader = batches(sizes)
    res = trainer.train(loader, epoch=1)
    f32 = [float(np.float32(c) / np.float32(n)) for c, n in zip(correct, sizes)]
    assert res['loss'] == pytest.approx((0.5 + 0.25 + 2.0) / 3, rel=1e-15)
    assert res['clean_acc'] == (f32[0] + f32[1] + f32[2]) / 3           # the unweighted mean of the batch values
    assert res['clean_acc'] != (3 / 7 + 5 / 7 + 1 / 3) / 3                # float64 divisions give other digits
    first_right = [float(c > 0) for c in correct]
    assert res['adversarial_acc'] == sum(first_right) / 3
    assert list(res) == ['loss', 'clean_acc', 'adversarial_acc']


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_loss_stops_at_its_batch(bad):
    trainer = make_trainer()
    trainer.loss = FakeLoss(trainer, [0.5, 0.4, bad, 0.3, 0.2], [1] * 5)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteLoss) as info:
        trainer.train(batches([4] * 5), epoch=7)
    e = info.value
    assert (e.epoch, e.batch, e.num_batches) == (7, 3, 5) and isinstance(e, UserError)
    assert str(e) == f'epoch 7, batch 3 of 5: the training loss is {bad} (not finite)'
    assert trainer.loss.b == 3                                     # on the CPU it stops right after that batch
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # steps 1-2 ran


def test_fp16_skips_tolerated_until_a_streak():
    """With an enabled GradScaler a non-finite loss is a skipped step; only 16 in a row stop (EpochMetrics)."""
    m = EpochMetrics(torch.device('cpu'), tolerance=16)
    nan = torch.tensor(float('nan'))
    runtime = type('R', (), {'distributed': False})()
    for _ in range(3):
        m.add({'loss': nan})
    m.add({'loss': torch.tensor(1.0)})
    m.check_finite(1, 100, runtime)                                 # 3 skipped steps, then a good one: fine
    for _ in range(16):
        m.add({'loss': nan})
    m.check_finite(1, 100, runtime)                                 # 16 in a row: still tolerated
    m.add({'loss': nan})
    with pytest.raises(NonFiniteLoss, match='epoch 1, batch 21 of 100'):
        m.check_finite(1, 100, runtime)


def test_rescale_lr_continues_the_schedule_of_the_new_lr():
    """cosinew, E = 3: after one step the rescaled schedule is the one --lr 0.05 has at that step (to rounding)."""
    trainer = make_trainer()
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.rescale_lr(0.5)
    fresh = make_trainer('--lr', '0.05')
    fresh.optimizer.step()
    fresh.scheduler.step()
    assert trainer.last_lr() == pytest.approx(fresh.last_lr(), rel=1e-14)
    # OneCycleLR by hand: step 1 of 3, phase 1 ends at 0.025 * 3 - 1 = -0.925
    pct = (1 + 0.925) / (2 + 0.925)
    low = 0.05 / 25 / 1e4
    assert trainer.last_lr() == pytest.approx(low + (0.05 - low) / 2 * (1 + math.cos(math.pi * pct)), rel=1e-12)
    for t in (trainer, fresh):
        t.optimizer.step()
        t.scheduler.step()
    assert trainer.last_lr() == pytest.approx(fresh.last_lr(), rel=1e-14)


@pytest.mark.parametrize('tau', ['0', '0.995'])
def test_builder_wires_one_optimiser_and_the_eval_attack_on_the_evaluated_model(tau):
    """One optimiser over exactly the trained model's parameters; the evaluation attack attacks the evaluated
    model (the averaged one with --tau > 0, where the trained model is not evaluated)."""
    from core.training.builder import build_trainer
    args = parser_train().parse_args(['--desc', 'x', '--model', 'wrn-10-1-swish', '--num-adv-epochs', '3',
                                      '--tau', tau])
    trainer = build_trainer(get_data_info('./data/cifar10'), args)
    params = [p for g in trainer.optimizer.param_groups for p in g['params']]
    assert sorted(map(id, params)) == sorted(map(id, trainer.model.parameters()))
    assert trainer.eval_attack.model is trainer.eval_model
    if tau == '0':
        assert trainer.ema is None and trainer.eval_model is trainer.model
    else:
        assert trainer.eval_model is trainer.ema.wa_model is not trainer.model
        assert all(torch.equal(a, b) for a, b in zip(trainer.wa_model.parameters(), trainer.model.parameters()))


def test_core_imports_nothing_from_the_reference_paths():
    """The layers point down: core/ never imports gowal21uncovering/ (which re-exports core's names)."""
    import glob
    import re
    offenders = [path for path in glob.glob(os.path.join(ROOT, 'core', '**', '*.py'), recursive=True)
                 if re.search(r'^\s*(from|import)\s+gowal21uncovering', open(path).read(), re.M)]
    assert offenders == []
