"""The project's domain exceptions: services raise them, the API turns them into 4xx JSON."""


class DomainError(Exception):
    """A request that cannot be carried out; `field` names the input at fault when there is one."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class InvalidTransition(DomainError):
    """An action asked of an object in a state that does not allow it (409 Conflict)."""

    status_code = 409
    code = "invalid_state"


class JobCancelled(Exception):
    """Raised inside a job when a user asked for it to stop; the runner records it as cancelled."""
