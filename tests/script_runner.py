"""Run a repository script in this process, as `python SCRIPT ARGV...` would (tests share this helper)."""
import runpy
import sys


def run_script(script, argv):
    """Run `script` with `argv` as __main__; returns its exit code (0 when it returns normally)."""
    old = sys.argv
    sys.argv = [script] + [str(a) for a in argv]
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as e:
        return 0 if e.code is None else e.code
    finally:
        sys.argv = old
    return 0
