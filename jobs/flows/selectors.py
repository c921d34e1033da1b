"""Flow reads, scoped to their owner."""

from django.contrib.auth.models import User
from django.db.models import QuerySet

from jobs.models import Flow


def flow_list(*, user: User) -> QuerySet[Flow]:
    return Flow.objects.filter(owner=user).select_related("failed_step")


def nested_flows(*, flow: Flow) -> dict[int, str]:
    """Step id -> id of the flow nested in it, for the steps of `flow` that are flows."""
    return {
        step: str(nested)
        for step, nested in Flow.objects.filter(parent_step__flow=flow).values_list("parent_step_id", "id")
    }
