"""The layers of pyproject.toml's import-linter contract hold: no module of core/ imports a layer above its own."""
import os

from importlinter.cli import lint_imports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lint_imports_keeps_the_layers_contract(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(ROOT)
    assert lint_imports(config_filename='pyproject.toml', no_cache=True) == 0, capsys.readouterr().out
