"""The one exception type for bad user input.

Scripts catch it at the top and print its message as one line on stderr, with exit code 2.
"""
import sys


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a checkpoint): the message names the problem and the fix."""


def exit_on_user_error(main):
    """Run `main()`; a UserError becomes `error: <message>` on stderr and exit code 2."""
    try:
        return main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
