"""/api/kyc/..."""

from django.urls import path

from kyc import api

app_name = "kyc"

urlpatterns = [
    path("submissions/", api.SubmissionCollectionApi.as_view(), name="submissions"),
    path("submissions/<uuid:submission_id>", api.SubmissionDetailApi.as_view(), name="submission-detail"),
]
