"""The reference's import path of the trainer with weight averaging (code in core/training/builder.py)."""
from core.training.builder import WATrainer

__all__ = ['WATrainer']
