"""Attack library: eps-ball and box invariants, model-state restoration, formulas worked by hand."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.attacks import (
    ATTACKS,
    CWLoss,
    FGMAttack,
    FGSMAttack,
    L2APGDAttack,
    L2DeepFoolAttack,
    L2PGDAttack,
    LinfAPGDAttack,
    LinfDeepFoolAttack,
    LinfPGDAttack,
    PGDAttack,
    attack_norm,
    create_attack,
    create_eval_attack,
    create_wa_eval_attack,
)
from core.attacks.autoattack import BACKEND
from core.utils.errors import UserError

TOL = 1e-6
EPS = {'Linf': 0.1, 'L2': 1.0}  # large enough for the tiny net to be fooled at least sometimes
STEP = {'Linf': 0.03, 'L2': 0.3}
K = 4


# ---------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope='module')
def fitted():
    """Conv-BN-ReLU-pool-Linear briefly fitted on 8 random 3x8x8 images (4 classes); BN stats = batch stats."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 8, 8, generator=g)
    y = torch.arange(8) % K
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, K))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model[1].reset_running_stats()
    with torch.no_grad():
        model(x)  # momentum None: running stats = this batch's stats, so eval mode = train mode
    model.eval()
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    assert clean_acc > 1 / K
    return model, x, y, clean_acc


@pytest.fixture
def model(fitted):
    return copy.deepcopy(fitted[0])


def linear_model(w):
    """logits = W x.flatten() for x of shape (B, 3, 2, 2); W (2, 12)."""
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 2, bias=False))
    with torch.no_grad():
        m[1].weight.copy_(w)
    return m


def set_mixed_state(model):
    """Some submodules train, some eval; a mix of requires_grad. Returns the state to compare with."""
    model.train()
    model[1].eval()
    model[4].eval()
    model[0].weight.requires_grad_(False)
    model[1].bias.requires_grad_(False)
    return state_of(model)


def state_of(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def make(model, attack_type, loss=None):
    norm = attack_norm(attack_type)
    return create_attack(model, loss or nn.CrossEntropyLoss(), attack_type, EPS[norm], STEP[norm], 5)


# ---------------------------------------------------------------------------------------------------------------
# invariants for every attack type


@pytest.mark.parametrize('attack_type', ATTACKS)
def test_ball_box_and_robust_accuracy(fitted, model, attack_type):
    _, x, y, clean_acc = fitted
    x_adv = make(model, attack_type)(x, y)
    r_adv = x_adv - x
    assert not x_adv.requires_grad and not r_adv.requires_grad
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    eps = EPS[attack_norm(attack_type)]
    if attack_type.endswith('-df'):
        pass  # DeepFool is a minimal-perturbation attack: not eps-bounded by definition
    elif attack_norm(attack_type) == 'Linf':
        assert r_adv.abs().max() <= eps + TOL
    else:
        assert r_adv.flatten(1).norm(dim=1).max() <= eps + TOL
    with torch.no_grad():
        robust_acc = (model(x_adv).argmax(1) == y).float().mean().item()
    assert robust_acc <= clean_acc


@pytest.mark.parametrize('attack_type', ATTACKS)
def test_model_state_restored(fitted, model, attack_type):
    _, x, y, _ = fitted
    before = set_mixed_state(model)
    bn_mean = model[1].running_mean.clone()
    make(model, attack_type)(x, y)
    assert state_of(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model[1].running_mean, bn_mean)  # the attack ran in eval mode: BN stats untouched


class RaiseOnSecondForward(nn.Module):
    """Wraps a model; records (all submodules eval?, no parameter requires grad?) and raises on the 2nd call."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.seen = []

    def forward(self, x):
        self.seen.append((not any(m.training for m in self.modules()),
                          not any(p.requires_grad for p in self.parameters())))
        if len(self.seen) == 2:
            raise RuntimeError('boom')
        return self.net(x)


@pytest.mark.parametrize('attack_type', ATTACKS)
def test_model_state_restored_when_attack_raises(fitted, model, attack_type):
    _, x, _, _ = fitted
    wrapped = RaiseOnSecondForward(model)
    set_mixed_state(model)
    wrapped.train()
    before = state_of(wrapped)
    with pytest.raises(RuntimeError, match='boom'):
        make(wrapped, attack_type)(x)  # y=None: 1st forward predicts the labels, the 2nd is inside the attack
    assert state_of(wrapped) == before
    assert wrapped.seen == [(True, True), (True, True)]


def test_attack_is_the_same_in_train_mode_and_under_no_grad(fitted, model):
    """The attack itself switches to eval mode and enables grad: the trainer's numbers whatever the caller did."""
    _, x, y, _ = fitted
    attack = make(model, 'linf-pgd')
    torch.manual_seed(3)
    ref = attack(x, y)
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        out = attack(x, y)
    assert torch.equal(ref, out)


def test_labels_default_to_the_prediction(fitted, model):
    _, x, _, _ = fitted
    attack = make(model, 'l2-pgd')
    with torch.no_grad():
        pred = model(x).argmax(1)
    torch.manual_seed(4)
    a = attack(x)
    torch.manual_seed(4)
    b = attack(x, pred)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# formulas worked by hand on a linear 2-class model: d CE / dx = p_other (W_other - W_y), so the gradient
# direction is W_other - W_y whatever the point


W = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0, -0.5, 0.3, 0.2, -2.0, 1.5, 0.1, -0.1],
                  [-0.5, 1.0, 1.0, 0.5, -1.0, 0.5, 0.4, -0.2, 1.0, 1.0, 0.4, 0.3]])
X = torch.tensor([0.02, 0.5, 0.98, 0.3, 0.7, 0.01, 0.5, 0.5, 0.99, 0.2, 0.6, 0.4]).view(1, 3, 2, 2)
Y = torch.tensor([0])
DIR = (W[1] - W[0]).view(1, 3, 2, 2)  # direction increasing the loss of label 0 (no zero entry)


def test_fgsm_by_hand():
    eps = 0.05
    x_adv = FGSMAttack(linear_model(W), nn.CrossEntropyLoss(), eps=eps)(X, Y)
    expected = torch.clamp(X + eps * DIR.sign(), 0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-7)
    assert x_adv[0, 0, 0, 0] == 0 and x_adv[0, 2, 0, 0] == 1  # both clamps of the box are exercised


def test_fgm_by_hand():
    eps = 0.5
    x_adv = FGMAttack(linear_model(W), nn.CrossEntropyLoss(), eps=eps)(X, Y)
    expected = torch.clamp(X + eps * DIR / DIR.norm(), 0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)


def test_linf_pgd_first_step_by_hand():
    eps, step = 0.1, 0.08
    attack = LinfPGDAttack(linear_model(W), nn.CrossEntropyLoss(), eps=eps, nb_iter=1, eps_iter=step)
    torch.manual_seed(7)
    u = torch.zeros_like(X).uniform_(-1, 1)  # the random start drawn by hand from the same stream
    delta = torch.clamp(X + eps * u, 0, 1) - X
    delta = torch.clamp(delta + step * DIR.sign(), -eps, eps)
    expected = torch.clamp(X + delta, 0, 1)
    torch.manual_seed(7)
    x_adv = attack(X, Y)
    assert torch.allclose(x_adv, expected, atol=1e-7)


def test_l2_pgd_first_step_by_hand():
    eps, step = 0.3, 0.2  # no random start: delta = step * d/||d||, then box, then projection onto the ball
    delta = torch.clamp(X + step * DIR / DIR.norm(), 0, 1) - X
    expected = X + delta * min(1., eps / delta.norm().item())
    x_adv = L2PGDAttack(linear_model(W), nn.CrossEntropyLoss(), eps=eps, nb_iter=1, eps_iter=step,
                        rand_init=False)(X, Y)
    assert torch.allclose(x_adv, expected, atol=1e-6)


@pytest.mark.parametrize('ord, init', [(math.inf, 'uniform'), (2, 'uniform'), (math.inf, 'normal')])
def test_pgd_random_start_by_hand(ord, init):
    """nb_iter = 0 returns the random start, drawn from the same stream by hand."""
    x, eps = torch.rand(3, 3, 2, 2), 0.5
    attack = PGDAttack(linear_model(W), nn.CrossEntropyLoss(), eps=eps, nb_iter=0, ord=ord, rand_init_type=init)
    torch.manual_seed(11)
    if init == 'normal':
        delta = 0.001 * torch.randn_like(x)  # no clamp of delta; only the final box clamp
    elif ord == 2:
        delta = torch.zeros_like(x).uniform_(0, 1) - x  # U(0, 1) - x, then scaled into the ball
        delta = delta * torch.clamp(eps / delta.flatten(1).norm(dim=1), max=1).view(-1, 1, 1, 1)
    else:
        delta = eps * torch.zeros_like(x).uniform_(-1, 1)
    expected = torch.clamp(x + delta, 0, 1)
    torch.manual_seed(11)
    assert torch.allclose(attack(x, torch.zeros(3, dtype=torch.long)), expected, atol=1e-6)


@pytest.mark.parametrize('cls, dual', [(L2DeepFoolAttack, 2), (LinfDeepFoolAttack, 1)])
def test_deepfool_by_hand(cls, dual):
    """One step reaches the linear boundary: r = (|f|/||w||_q + 1e-6) * (w/||w||_2 or sign w), x + 1.02 r."""
    w = torch.tensor([[0.2, -0.1, 0.3, 0.1, 0.0, 0.2, -0.2, 0.1, 0.3, -0.1, 0.2, 0.1],
                      [0.0, 0.1, 0.1, -0.1, 0.1, 0.0, 0.1, 0.2, 0.1, 0.1, 0.0, 0.0]])
    x = torch.full((1, 3, 2, 2), 0.5)
    m = linear_model(w)
    f = (m(x)[0, 1] - m(x)[0, 0]).item()  # class 0 is predicted
    d = (w[1] - w[0]).view_as(x)
    assert f < 0
    pert = abs(f) / d.norm(p=dual).item() + 1e-6
    r = pert * (d / d.norm() if dual == 2 else d.sign())
    expected = torch.clamp(x + 1.02 * r, 0, 1)
    x_adv = cls(m, nb_iter=3)(x, torch.tensor([1]))  # the label given is ignored
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert m(x_adv).argmax(1).item() == 1


def test_cw_loss_by_hand():
    z = torch.tensor([[1.0, 3.0, 2.0], [0.5, -1.0, 2.0]])
    # margins: row 0 (y=1): 3 - max(1, 2) = 1; row 1 (y=2): 2 - max(0.5, -1) = 1.5
    assert CWLoss(z, torch.tensor([1, 2])).item() == pytest.approx(-2.5)
    # row 0 with y=0: 1 - 3 = -2 -> clamped to 0
    assert CWLoss(z, torch.tensor([0, 2])).item() == pytest.approx(-1.5)
    # confidence 1: max(-2 + 1, 0) + max(1.5 + 1, 0) = 2.5
    assert CWLoss(z, torch.tensor([0, 2]), confidence=1.).item() == pytest.approx(-2.5)


# ---------------------------------------------------------------------------------------------------------------
# APGD wrapper and the trainers' rules


@pytest.mark.skipif(BACKEND is None, reason='AutoAttack not installed')
@pytest.mark.parametrize('cls, norm', [(LinfAPGDAttack, 'Linf'), (L2APGDAttack, 'L2')])
def test_apgd_both_norms_loss_ce(fitted, model, cls, norm):
    _, x, y, clean_acc = fitted
    attack = cls(model, nn.CrossEntropyLoss(), n_restarts=1, eps=EPS[norm], nb_iter=5)
    assert attack.apgd.loss == 'ce' and attack.apgd.norm == norm
    rng = torch.get_rng_state()
    x_adv = attack(x, y)
    assert torch.equal(torch.get_rng_state(), rng)  # APGD's reseeding does not leak into the caller's stream
    r = (x_adv - x).flatten(1)
    assert (r.abs().max() if norm == 'Linf' else r.norm(dim=1).max()) <= EPS[norm] + TOL
    assert 0 <= x_adv.min() and x_adv.max() <= 1
    assert (model(x_adv).argmax(1) == y).float().mean().item() <= clean_acc
    attack.apgd.perturb = lambda x, y: (None, x + 0.25)  # an old AutoAttack returning (acc, x_adv)
    assert torch.allclose(attack(x, y), x + 0.25)


@pytest.mark.parametrize('attack_type, train_cls, eval_cls, eval_eps, eval_iter, eval_step', [
    ('linf-pgd', LinfPGDAttack, LinfPGDAttack, 0.1, 10, 0.03),
    ('l2-pgd', L2PGDAttack, L2PGDAttack, 0.1, 10, 0.03),
    ('fgsm', FGSMAttack, LinfPGDAttack, 8 / 255, 20, 2 / 255),
    ('linf-df', LinfDeepFoolAttack, LinfPGDAttack, 8 / 255, 20, 2 / 255),
    ('fgm', FGMAttack, L2PGDAttack, 128 / 255, 20, 15 / 255),
    ('l2-df', L2DeepFoolAttack, L2PGDAttack, 128 / 255, 20, 15 / 255),
    ('linf-apgd', LinfAPGDAttack, LinfPGDAttack, 0.1, 10, 0.03),
    ('l2-apgd', L2APGDAttack, L2PGDAttack, 0.1, 10, 0.03),
])
def test_trainer_attack_rules(model, attack_type, train_cls, eval_cls, eval_eps, eval_iter, eval_step):
    criterion = nn.CrossEntropyLoss()
    train = create_attack(model, criterion, attack_type, 0.1, 0.03, 5)
    ev = create_eval_attack(model, criterion, attack_type, 0.1, 0.03, 5)
    assert type(train) is train_cls and type(ev) is eval_cls
    assert (ev.eps, ev.nb_iter, ev.eps_iter) == (pytest.approx(eval_eps), eval_iter, pytest.approx(eval_step))
    assert ev.loss_fn is criterion and ev.rand_init and ev.rand_init_type == 'uniform'
    if train_cls in (LinfPGDAttack, L2PGDAttack):
        assert (train.eps, train.nb_iter, train.eps_iter) == (0.1, 5, 0.03)
    if train_cls in (LinfDeepFoolAttack, L2DeepFoolAttack):
        assert (train.nb_iter, train.overshoot) == (5, 0.02)
    if train_cls in (FGSMAttack, FGMAttack):
        assert train.eps == 0.1 and train.loss_fn is criterion
    if train_cls in (LinfAPGDAttack, L2APGDAttack):
        assert (train.eps, train.nb_iter, train.n_restarts, train.apgd.loss) == (0.1, 5, 2, 'ce')

    wa = create_wa_eval_attack(model, attack_type, 0.1, 0.03, 5)  # same type, CW loss, 4T
    assert type(wa) is train_cls
    if isinstance(wa, (LinfPGDAttack, L2PGDAttack)):
        assert (wa.loss_fn, wa.eps, wa.nb_iter, wa.eps_iter) == (CWLoss, 0.1, 20, 0.03)
    if isinstance(wa, (LinfAPGDAttack, L2APGDAttack)):
        assert (wa.apgd.loss, wa.eps, wa.nb_iter) == ('ce', 0.1, 20)  # APGD always uses 'ce'


def test_attack_norm_and_unknown_type(model):
    assert [attack_norm(a) for a in ATTACKS] == ['Linf', 'Linf', 'L2', 'L2', 'Linf', 'L2', 'Linf', 'L2']
    with pytest.raises(UserError, match='linf-pgd'):
        create_attack(model, nn.CrossEntropyLoss(), 'pgd', 0.1, 0.03, 5)
    assert math.isinf(create_attack(model, None, 'linf-pgd', 0.1, 0.03, 5).ord)
