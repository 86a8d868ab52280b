"""The one exception type the CLI turns into a single clear error line.

Every check on user input (config, data, stores, checkpoints) raises :class:`DarsError` with a
message that names the culprit (a key, a file, a class); the CLI prints it and exits non-zero
instead of a traceback deep inside torch or numpy.
"""


class DarsError(Exception):
    """A problem with the user's input that the user can fix."""
