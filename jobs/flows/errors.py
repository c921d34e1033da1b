"""Errors of flows: API conflicts as problem details, a duplicate flow, a step's error code."""

import re

from core.problems import ApplicationError


class FlowExists(ApplicationError):
    """flow_start with a dedupe_key another active (not cancelled) flow holds."""

    status_code = 409
    code = "flow-exists"
    title = "An active flow for this already exists"


class FlowStateConflict(ApplicationError):
    status_code = 409
    code = "flow-state-conflict"
    title = "The flow is not in a state that allows this"


def error_code(exc: BaseException) -> str:
    """A short machine-readable name for a step's failure: the exception's own `code` if it has
    one (ApplicationError subclasses, our clients' errors), else its class name in kebab case."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code[:100]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()[:100]
