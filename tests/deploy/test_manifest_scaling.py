"""deploy/k8s invariants of autoscaling: replicas are left to the autoscalers, each worker
scales on its own queue (Redis and RabbitMQ), over every priority list of that queue."""

from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from jobs.task_metrics import queue_keys
from tests.deploy.manifests import of_kind, rendered, worker_queues, workers


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(base):
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(base, "HorizontalPodAutoscaler")}
    scaled |= {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(base, "ScaledObject")}
    assert scaled == {"taskyard-web", *(w["metadata"]["name"] for w in workers(base))}
    for deployment in of_kind(base, "Deployment"):
        name = deployment["metadata"]["name"]
        assert ("replicas" in deployment["spec"]) == (name not in scaled), name
    disrupted = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in of_kind(base, "PodDisruptionBudget")
    }
    assert disrupted >= {
        "web",
        *(w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workers(base)),
    }


def test_each_worker_scales_on_its_own_queue(base):
    for worker in workers(base):
        [scaler] = [
            s
            for s in of_kind(base, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        ]
        assert scaler["spec"]["triggers"][0]["metadata"]["listName"] == worker_queues(worker)[0]
        assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"]
    rabbit = rendered("overlays/example-rabbitmq")
    for worker in workers(rabbit):
        [scaler] = [
            s
            for s in of_kind(rabbit, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        ]
        assert [t["metadata"]["queueName"] for t in scaler["spec"]["triggers"]] == worker_queues(worker)


def test_each_worker_scales_on_every_priority_list_of_its_queue(base):
    """kombu's Redis transport spreads a queue over one list per priority band; the triggers
    read them all (the same keys taskyard_queue_depth sums) and scale on their sum."""
    for worker in workers(base):
        [queue] = worker_queues(worker)
        bands = [queue] + [f"{queue}{RedisChannel.sep}{step}" for step in PRIORITY_STEPS if step]
        assert queue_keys(queue) == bands
        [scaler] = [
            s
            for s in of_kind(base, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        ]
        triggers = scaler["spec"]["triggers"]
        assert [t["metadata"]["listName"] for t in triggers] == bands
        modifiers = scaler["spec"]["advanced"]["scalingModifiers"]
        assert modifiers["formula"].replace(" ", "") == "+".join(t["name"] for t in triggers)
        assert modifiers["metricType"] == "AverageValue"
        assert {t["metadata"]["listLength"] for t in triggers} == {modifiers["target"]}
