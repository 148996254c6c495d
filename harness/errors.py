"""The one exception type users see: a sentence naming the file or key and the fix."""


class HarnessError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback and exits non-zero."""
