"""The one exception type for bad user input.

Anything the user can fix (a missing file, a wrong column, a bad hyperparameter) raises
`UserError` with a one-line message that names what and where. The CLI turns it into
`transferkit: error: <message>` on stderr and exit code 2, before any output is written.
"""


class UserError(ValueError):
    """Bad input from the user: a one-line message naming what and where."""
