"""The exceptions ``memory`` raises; each is raised ``from`` the error that caused it."""


class RapportMemoryError(Exception):
    """Base of every error raised by the memory package."""


class MemoryUnavailableError(RapportMemoryError):
    """Redis could not be reached or did not answer in time; the call goes on without memory."""


class MemoryTimeoutError(MemoryUnavailableError):
    """Redis did not answer within the command timeout (it may be slow, hung or overloaded)."""


class MemoryConnectionError(MemoryUnavailableError):
    """Redis could not be reached (down, restarting, wrong address)."""


class MemoryRefusedError(MemoryUnavailableError):
    """Redis answered with an error: a script failed, a limit was hit, a command was refused.

    Retrying the same write will not help; it is not a timeout.
    """


class HistoryUnavailableError(RapportMemoryError):
    """The call history's database (``RAPPORT_HISTORY_URL``) could not be reached or did not answer.

    Nothing was written or deleted: the analysis worker keeps the call's job until it answers.
    """


class HistoryRefusedError(RapportMemoryError):
    """The call history's database refused a write as invalid (a constraint, a value too long).

    Retrying the same write will not help; the call stays in Redis as it is.
    """


class ForgottenCallerError(RapportMemoryError):
    """A write was refused because the caller was forgotten after the call it belongs to began."""


class InvalidIdentityError(RapportMemoryError):
    """A caller id or agent id cannot identify a caller (anonymous callers are never stored)."""


class ConfigurationError(RapportMemoryError):
    """A setting is missing or contradictory (e.g. ``REDIS_URL`` without ``RAPPORT_PEPPER``)."""


class AnalysisError(RapportMemoryError):
    """The post-call analysis of a call failed; the call record and transcript stay as they are."""


class RetryableAnalysisError(AnalysisError):
    """The LLM could not answer now (timeout, connection, 429, 5xx, 529 overloaded); retry later.

    Attributes:
        retry_after: Seconds the server asked to wait (``retry-after``), or None.

    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidAnalysisError(AnalysisError):
    """The LLM answered, but not with a valid analysis (malformed, off-schema, unknown action).

    Another request may well succeed, so the worker retries it, but only a small number of
    times: a prompt or model that keeps producing invalid output must reach the dead-letter
    stream rather than loop.
    """


class PermanentAnalysisError(AnalysisError):
    """The request itself was refused (4xx other than 429: auth, bad request); do not retry."""
