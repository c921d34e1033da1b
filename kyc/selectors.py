"""KYC reads, always scoped to their owner."""

from django.contrib.auth.models import User
from django.db.models import QuerySet

from kyc.models import Submission


def submission_list(*, user: User) -> QuerySet[Submission]:
    return Submission.objects.filter(owner=user).prefetch_related("documents").order_by("-created_at")


def submission_get(*, user: User, submission_id: str) -> Submission:
    """Another user's submission is indistinguishable from a missing one (404)."""
    return submission_list(user=user).get(pk=submission_id)
