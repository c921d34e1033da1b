from django.urls import path

from jobs.flows.api import FlowCancelApi, FlowDetailApi

app_name = "flows"

urlpatterns = [
    path("<uuid:flow_id>", FlowDetailApi.as_view(), name="detail"),
    path("<uuid:flow_id>/cancel", FlowCancelApi.as_view(), name="cancel"),
]
