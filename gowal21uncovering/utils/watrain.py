"""The reference's import path of the trainer with weight averaging: `WATrainer`.

Paper: Gowal et al., "Uncovering the Limits of Adversarial Training against Norm-Bounded Adversarial
Examples", 2020 (weight averaging, the BatchNorm momentum trick, CutMix), as used by SCORE (Pang et al.,
ICML 2022). The trainer is `core.trainer.AdversarialTrainer` with a `core.weight_averaging.EMA`, built by
`core.builder.build_trainer`.
"""
from core.utils.train import Trainer

__all__ = ['WATrainer']


class WATrainer(Trainer):
    """`build_trainer(info, args, runtime, weight_averaging=True)` under the reference's name: MART > SCORE-LSE >
    TRADES-KL > Madry (docs/differences.md item 37), CutMix x4 with TRADES-KL / SCORE-LSE (item 26); evaluation
    and `model_state_dict` on the averaged model (item 40). Args: as `core.utils.train.Trainer`."""

    WEIGHT_AVERAGING = True
