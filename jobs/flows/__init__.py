"""Flows: steps with dependencies, tracked in PostgreSQL on the outbox (docs/flows.md).

Start one with jobs.flows.services.flow_start and jobs.flows.definition.Step.
"""
