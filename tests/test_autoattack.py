"""The AutoAttack adapter core/attacks/autoattack.py on its own: the official package's API mapped (a fake package), an
interrupted evaluation resumed from its state file, the progress bar (eval-aa.py end to end: tests/test_eval_aa.py)."""
import os

import pytest
import torch
from eval_aa_helpers import FakeOfficialAutoAttack, PixelModel

import core.attacks.autoattack as aa
from core.attacks.autoattack import flags_to_str

pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def test_official_api_mapping_with_a_fake_package(monkeypatch, tmp_path):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    model = PixelModel()
    x = torch.zeros(8, 3, 2, 2)
    x[:, 0, 0, 0] = torch.arange(8) / 100  # ids 0..7
    y = torch.zeros(8, dtype=torch.long)
    y[7] = 3  # misclassified from the start

    log_path = str(tmp_path / 'log-aa.log')
    adversary = aa.make_autoattack(model, 'L2', 0.5, version='custom', seed=3, log_path=log_path)
    assert adversary.kwargs == dict(norm='L2', eps=0.5, seed=3, verbose=True, attacks_to_run=['apgd-ce', 'apgd-t'],
                                    version='custom', device=torch.device('cpu'), log_path=log_path)
    assert adversary.apgd.n_restarts == 1 and adversary.apgd_targeted.n_restarts == 1
    assert adversary.apgd.n_iter == 100  # the constructor's default stays
    result = aa.run_autoattack(adversary, x, y, bs=3, chunk_batches=1)
    # one call per attack and chunk of bs points, quiet, labels returned; the chunks of apgd-ce: ids 0-2, 3-5, 6
    assert [(c['attacks'], c['n']) for c in adversary.calls] == [
        (['apgd-ce'], 3), (['apgd-ce'], 3), (['apgd-ce'], 1), (['apgd-t'], 3), (['apgd-t'], 1)]
    assert all(c['bs'] == 3 and c['return_labels'] and c['state_path'] is None and not c['verbose']
               for c in adversary.calls)
    assert adversary.attacks_to_run == ['apgd-ce', 'apgd-t'] and adversary.verbose
    # clean: ids 0..6 right; apgd-ce fools 0, 2, 4; apgd-t fools 5 -> 3 of 8 (ids 1, 3, 6) remain
    assert result['counts'] == {'clean': 7, 'attacks': {'apgd-ce': 4, 'apgd-t': 3}, 'robust': 3}
    assert result['attacks'] == {'apgd-ce': 0.5, 'apgd-t': 0.375} and result['robust'] == 0.375
    assert result['backend'] == 'autoattack'
    log = open(log_path).read()
    assert 'robust accuracy after APGD-T: 37.50% (3/8' in log and 'running apgd-ce on 7 points' in log

    adversary = aa.make_autoattack(model, 'Linf', 8 / 255, version='standard', seed=1, log_path=None)
    assert adversary.kwargs['attacks_to_run'] == [] and adversary.kwargs['version'] == 'standard'
    result = aa.run_autoattack(adversary, x, y, bs=250)
    assert result['counts']['attacks'] == {'apgd-ce': 4, 'apgd-t': 3, 'fab-t': 2, 'square': 2}
    with pytest.raises(ValueError):
        aa.make_autoattack(model, 'Linf', 8 / 255, version='standard', n_iter=5)


@pytest.mark.skipif(aa.BACKEND is None, reason='no AutoAttack package')
def test_resume_after_interruption_gives_the_same_numbers(tmp_path):
    """Interrupt AutoAttack mid-way (the model raises), rerun with the same state file: same per-attack counts."""

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
            self.calls, self.limit = 0, None

        def forward(self, x):
            self.calls += 1
            if self.limit is not None and self.calls > self.limit:
                raise KeyboardInterrupt
            return self.net(x)

    model = Linear().eval()
    x = torch.rand(12, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10

    def run(state_path=None, limit=None):
        model.calls, model.limit = 0, limit
        adversary = aa.make_autoattack(model, 'Linf', 0.04, version='custom', seed=0, n_iter=10)
        return aa.run_autoattack(adversary, x, y, bs=3, state_path=state_path, chunk_batches=1)

    fresh = run()
    total = model.calls
    assert fresh['counts']['clean'] == 10 and fresh['counts']['robust'] < fresh['counts']['attacks']['apgd-ce'] < 10
    for i, fraction in enumerate((0.1, 0.4, 0.8)):  # in apgd-ce, in apgd-t, near the end
        state_path = str(tmp_path / f'state{i}.json')
        with pytest.raises(KeyboardInterrupt):
            run(state_path, limit=int(fraction * total))
        assert os.path.exists(state_path)
        resumed = run(state_path)
        assert resumed['resumed'] and resumed['counts'] == fresh['counts']
        assert model.calls < total  # it did continue, not start over


def test_progress_bar_counts_chunks_with_the_running_robust_accuracy(monkeypatch, capsys):
    monkeypatch.setattr(aa, '_AutoAttack', FakeOfficialAutoAttack)
    monkeypatch.setattr(aa, 'BACKEND', 'autoattack')
    x = torch.zeros(8, 3, 2, 2)
    x[:, 0, 0, 0] = torch.arange(8) / 100  # ids 0..7; the fake apgd-ce fools ids 0, 2, 4
    y = torch.zeros(8, dtype=torch.long)
    adversary = aa.make_autoattack(PixelModel(), 'Linf', 0.5, version='custom', seed=3)
    result = aa.run_autoattack(adversary, x, y, bs=3, chunk_batches=1)
    err = capsys.readouterr().err
    assert 'apgd-ce' in err and '/3 [' in err  # 8 points in chunks of 3: 3 chunks
    assert 'robust 62.50%' in err  # after chunk 1 (ids 0-2: 0 and 2 fooled): 6 of 8 robust
    assert result['counts']['attacks']['apgd-ce'] == 5 and flags_to_str(result['robust_flags']) == '01010011'
    result = aa.run_autoattack(adversary, x, y, bs=3, chunk_batches=1, progress=False)
    assert 'apgd-ce:' not in capsys.readouterr().err
