from django.urls import path

from jobs.api import JobCancelApi, JobDetailApi, JobResultApi

app_name = "jobs"

urlpatterns = [
    path("<uuid:job_id>", JobDetailApi.as_view(), name="detail"),
    path("<uuid:job_id>/result", JobResultApi.as_view(), name="result"),
    path("<uuid:job_id>/cancel", JobCancelApi.as_view(), name="cancel"),
]
