"""Reads, scoped to their owner."""

from django.contrib.auth.models import User
from django.db.models import QuerySet

from jobs.models import Job


def job_list(*, user: User) -> QuerySet[Job]:
    return Job.objects.filter(owner=user)
