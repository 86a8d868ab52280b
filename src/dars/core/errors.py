"""The one exception the CLI turns into one error line, not a traceback from torch or numpy."""


class DarsError(Exception):
    """A problem with the user's input (config, data, stores, checkpoints) that the user can fix;
    its message names the culprit (a key, a file, a class)."""
