from django.urls import path

from jobs.api import JobDetailApi, JobResultApi

app_name = "jobs"

urlpatterns = [
    path("<uuid:job_id>", JobDetailApi.as_view(), name="detail"),
    path("<uuid:job_id>/result", JobResultApi.as_view(), name="result"),
]
