"""The house budget of the non-test code: at most 8,000 lines, at most 20% of them docstrings and comments, no function
over 100 lines (argparse tables included: none is that long). Growing past it means cutting elsewhere first."""
import ast
import io
import os
import subprocess
import tokenize

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def non_test_python():
    try:
        out = subprocess.check_output(['git', 'ls-files', '*.py'], cwd=ROOT, text=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    return [f for f in out.split() if not f.startswith('tests/')]


def comment_lines(src):
    """Line numbers of comments and of docstrings (module, class, function)."""
    lines = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, 'value', None), ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def test_the_non_test_code_keeps_its_budget():
    total = comments = 0
    long_functions = []
    for name in non_test_python():
        with open(os.path.join(ROOT, name), encoding='utf-8') as f:
            src = f.read()
        total += len(src.splitlines())
        comments += len(comment_lines(src))
        long_functions += [f'{name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)' for n in ast.walk(ast.parse(src))
                           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and n.end_lineno - n.lineno + 1 > 100]
    assert total <= 8000, f'{total} lines of non-test Python (budget 8,000)'
    assert comments <= 0.2 * total, f'{comments} of {total} lines are docstrings or comments (budget 20%)'
    assert not long_functions
