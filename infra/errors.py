"""One error type for everything that can go wrong bringing the stack up or down."""


class StackError(RuntimeError):
    """A failure a user can act on; the CLI prints its message on one line, no traceback."""
