"""The one exception the CLI turns into one error line, not a traceback from torch or numpy."""


class DarsError(Exception):
    """A user-fixable input problem (config, data, store, checkpoint); the message names it."""
