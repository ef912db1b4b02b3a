"""Accuracy (SPEC 6.9, quirk 9): argmax of the outputs equals the label."""


def num_correct(true, preds):
    """Number of rows whose argmax equals the label (logits or probabilities alike)."""
    return (preds.argmax(dim=1) == true).sum().item()


def accuracy(true, preds):
    """Fraction of the batch classified correctly (the reference's per-batch accuracy)."""
    return num_correct(true, preds) / max(1, true.shape[0])
