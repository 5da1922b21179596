"""``ParameterServerError``: the error for a failed exchange with a server, and the only one
exported from the package.

The project's other error classes are ``ValueError`` subclasses for bad input, raised where it
is read: ``transport.frames.ProtocolError`` (a malformed frame), ``server.checkpoint.
CheckpointError`` (an unusable checkpoint) and ``lbfgs.vectors.VectorOpError`` (an impossible
vector operation). Everything else is a built-in exception.
"""


class ParameterServerError(RuntimeError):
    """The master model server could not be reached, refused a request, or answered garbage.

    Raised on executors (the replica's client) and on the driver; the message names the URL,
    the route and what went wrong, so a failed Spark task says why in its stack trace.
    """
