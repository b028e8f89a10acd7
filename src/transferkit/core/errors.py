"""The exception types for problems the user can fix.

Anything the user can fix (a missing file, a wrong column, a bad hyperparameter, a damaged run
folder) raises `UserError` with a one-line message that names what and where. The CLI turns it
into `transferkit: error: <message>` on stderr and exit code 2, before any output is written.
"""


class UserError(ValueError):
    """Bad input from the user: a one-line message naming what and where."""


class TrainingDiverged(UserError):
    """The training loss or gradients became NaN or infinite; the last good checkpoint is kept."""
