"""One exception family for every mistake a user can act on.

The CLI catches `PeftlabError` and prints its message as one line; anything else is a bug and
keeps its traceback. Messages name the problem and the fix.
"""


class PeftlabError(Exception):
    """A problem with the user's input, model, data or files, with a message saying what to do."""


class ConfigError(PeftlabError, ValueError):
    """A method or run configuration value is out of range."""


class TargetError(PeftlabError, ValueError):
    """Target modules asked for do not exist or cannot carry the method."""


class AdapterFileError(PeftlabError):
    """An adapter folder is missing, corrupt, or does not match the model."""


class MergeError(PeftlabError):
    """A merge was asked of a method that cannot merge, or it would produce non-finite weights."""
