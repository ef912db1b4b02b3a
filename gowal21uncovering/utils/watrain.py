"""Adversarial training with weight averaging: the trainer of train-wa.py.

Paper: Gowal et al., "Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial
Examples", 2020 (weight averaging, the BatchNorm momentum trick, CutMix), as used by SCORE (Pang et al.,
ICML 2022). Evaluation always runs on the averaged model in eval mode.
"""
import copy

from core.attacks import create_wa_eval_attack
from core.utils.checkpoint import load_state_dict
from core.utils.train import Trainer
from core.utils.utils import seed
from gowal21uncovering.utils.cutmix import cutmix_expand
from gowal21uncovering.utils.ema import bn_momentum_trick, ema_update, update_bn, update_steps, warmup_steps

__all__ = ['WATrainer']


class WATrainer(Trainer):
    """Trainer with an exponential moving average of the weights (`wa_model`).

    Construction: `Trainer.__init__` (seed, model, optimizer with two parameter groups, pretrained weights,
    attacks), seed again, `wa_model` = deep copy of the model (so `--pretrained-file` initialises both),
    the eval attack = CW-loss PGD with 4T steps on `wa_model`, update_steps = floor(N / bs) + 1 with the
    reference's hard-coded N, warmup_steps = 0.025 * E * update_steps.

    Per batch: the BN momentum trick (1.0 at global step 0, 0.01 at step 1), optional CutMix x4 on the CPU
    batch, the loss (MART > LSE > TRADES > Madry), the optimizer step, and the EMA update of the parameters
    with global_step = (epoch - 1) * update_steps + update_iter. Per epoch: the scheduler step, then the
    BatchNorm running statistics are copied into `wa_model`.

    Args: as `Trainer`.
    """

    WEIGHT_AVERAGING = True  # objectives: MART > SCORE-LSE > TRADES-KL > Madry, CutMix with TRADES-KL / SCORE-LSE

    def __init__(self, info, args, runtime=None):
        super().__init__(info, args, runtime)
        seed(args.seed)
        self.wa_model = copy.deepcopy(self.model)
        self.eval_attack = create_wa_eval_attack(self.wa_model, args.attack, args.attack_eps, args.attack_iter,
                                                 args.attack_step)
        self.update_steps = update_steps(args.data, args.batch_size)
        self.warmup_steps = warmup_steps(args.num_adv_epochs, self.update_steps)

    def param_groups(self):
        """Two groups by parameter name, as the reference: names without `batchnorm` get --weight-decay,
        names with it get 0 (only the Swish families name their BatchNorms so)."""
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if 'batchnorm' in name else decay).append(p)
        return [{'params': decay}, {'params': no_decay, 'weight_decay': .0}]

    def prepare_batch(self, x, y, train=False):
        """CutMix x4 on the CPU batch when --CutMix (training batches only), then to the device."""
        if train and self.params.CutMix:
            x, y = cutmix_expand(x, y, self.num_classes, copies=4)
        return super().prepare_batch(x, y, train)

    def before_step(self, epoch, update_iter):
        bn_momentum_trick(self.model, self.global_step(epoch, update_iter))

    def after_step(self, epoch, update_iter):
        ema_update(self.wa_model, self.model, self.global_step(epoch, update_iter), decay_rate=self.params.tau,
                   warmup_steps=self.warmup_steps)

    def end_epoch(self):
        update_bn(self.wa_model, self.model)

    def eval_model(self):
        return self.wa_model

    def weights(self):
        """{'model_state_dict': averaged weights, 'unaveraged_model_state_dict': trained weights}."""
        return {'model_state_dict': self.wa_model.state_dict(),
                'unaveraged_model_state_dict': self.model.state_dict()}

    def state_dict(self):
        state = super().state_dict()
        state['wa_model'] = self.wa_model.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        load_state_dict(self.wa_model, state['wa_model'])

    def restore_bn_momentum(self, global_step):
        """After a resume: the BN momentum the trick left (0.01 once a step has been taken)."""
        if global_step >= 1:
            bn_momentum_trick(self.model, 1)
