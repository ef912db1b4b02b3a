"""The FLOPs of one training step of a built trainer, counted on a real batch without changing the run."""
from core.utils.compute import count_flops
from core.utils.rng import rng_state, set_rng_state


def flop_per_image(trainer, x, y):
    """FLOPs per image of one training step on the CPU batch (x, y); weights, gradients, modes and RNG are put back."""
    model, device = trainer.model, trainer.device
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad for p in model.parameters()]
    modes = [m.training for m in trainer.train_model.modules()]
    rng = rng_state(device)

    def step():
        xb, yb = trainer.prepare_train(x, y)
        with trainer.runtime.autocast():
            loss, _ = trainer.loss(xb, yb)
        loss.backward()

    try:
        flops, _ = count_flops(step)
    finally:
        model.load_state_dict(saved)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        for m, mode in zip(trainer.train_model.modules(), modes):
            m.training = mode
        set_rng_state(rng, device)
    return flops / len(x)
