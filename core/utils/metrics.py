"""Accuracy: argmax of the outputs equals the label.

`batch_accuracy` is the reference's per-batch accuracy, a float32 division `correct.float() / float(B)` kept as a
0-dim tensor on the outputs' device (the training loop reads it once per epoch, not once per batch; batch means of
it are the reported accuracies, docs/differences.md item 7);
`accuracy` is its value as a Python float, `num_correct` the exact count.
"""
import torch


def num_correct(true, preds):
    """Number of rows whose argmax equals the label (logits or probabilities alike)."""
    return (preds.argmax(dim=1) == true).sum().item()


def batch_accuracy(true, preds) -> torch.Tensor:
    """Fraction of the batch classified correctly, as the reference computes it: a float32 division, 0-dim tensor.

    E.g. 3 correct of 7 gives float32(3) / float32(7) = 0.4285714328289032, not 3 / 7 = 0.42857142857142855.
    """
    return (preds.argmax(dim=1) == true).sum().float() / float(max(1, true.shape[0]))


def accuracy(true, preds):
    """`batch_accuracy` as a Python float (the reference's per-batch accuracy, `.item()` of the float32 division)."""
    return batch_accuracy(true, preds).item()
