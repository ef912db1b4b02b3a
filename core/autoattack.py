"""One adapter over the two AutoAttack packages.

The official package (`autoattack`, installed from git) is used when it can be imported;
otherwise `pyautoattack` (PyPI), which carries the same attack code under another import name
with a keyword-only wrapper API. Everything else in this project imports AutoAttack from here.
"""
try:  # the official package first
    from autoattack import AutoAttack as _AutoAttack
    from autoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    BACKEND = 'autoattack'
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pyautoattack import AutoAttack as _AutoAttack
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

        BACKEND = 'pyautoattack'
    except ImportError:
        _AutoAttack = APGDAttack = APGDAttack_targeted = None
        BACKEND = None


def require_autoattack():
    """Raise a clear ImportError when neither package is installed."""
    if BACKEND is None:
        raise ImportError('AutoAttack is not installed: pip install pyautoattack '
                          '(or the official package: pip install git+https://github.com/fra31/auto-attack)')
