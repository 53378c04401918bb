"""One error type for everything that can go wrong bringing the stack up or down."""


class StackError(RuntimeError):
    """A failure a user can act on; the CLI prints its message on one line, no traceback."""


# How a probe says "the service answered but refused our credentials or TLS handshake":
# the one failure that retrying cannot fix, so callers stop at once.
CREDENTIALS_REFUSED = "credentials refused"
