"""Accuracy: per-batch float32 correct / B, their batch means reported (docs/differences.md item 7)."""
import torch


def num_correct(true, preds):
    return (preds.argmax(dim=1) == true).sum().item()


def batch_accuracy(true, preds) -> torch.Tensor:
    """A 0-dim float32 tensor: 3 of 7 gives float32(3) / float32(7) = 0.4285714328289032, not 3 / 7."""
    return (preds.argmax(dim=1) == true).sum().float() / float(max(1, true.shape[0]))


def accuracy(true, preds):
    return batch_accuracy(true, preds).item()
