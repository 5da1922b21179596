"""The project's one error type for the wire; everything else is a built-in exception."""


class ParameterServerError(RuntimeError):
    """The master model server could not be reached, refused a request, or answered garbage.

    Raised on executors (the replica's client) and on the driver; the message names the URL,
    the route and what went wrong, so a failed Spark task says why in its stack trace.
    """
