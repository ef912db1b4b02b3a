"""The reference's import path of CutMix; the code is in core/data/cutmix.py."""
from core.data.cutmix import cutmix, cutmix_expand

__all__ = ['cutmix', 'cutmix_expand']
