"""`model: "auto"` for an embeddings call: the cheapest configured model of its routing task.

The task is `embed` unless the call names another embeddings task (app/routing/auto.embeds); the
policy's chat scoring is not used, as its cost scale (up to $30 per 1M tokens) cannot tell embedding
prices apart. Pure apart from reading the policy file once, as app/routing/auto.py.
"""
from __future__ import annotations

from dataclasses import replace

from app.calls import Call
from app.catalog import Catalog, Resolved
from app.config import Settings
from app.errors import CapabilityMissing, ValidationError
from app.routing.auto import (EMBED_TASK, Candidate, configured_providers, embeds, load_policy, policy_candidates,
                              task_of)


def choose(call: Call, catalog: Catalog, settings: Settings) -> tuple[Resolved, str]:
    """`auto` for an embeddings call -> (the model, why). A policy without an `embed` task leaves
    every active embedding model of the catalog to choose from."""
    policy = load_policy(settings.routing_file)
    if call.task is None and EMBED_TASK not in policy["tasks"]:
        task = None
        listed = [Candidate(Resolved(model=m, requested=call.model), 0.0, i)
                  for i, m in enumerate(catalog.models.values())
                  if m.capabilities.embeddings and m.status == "active" and m.provider != "mock"]
    else:
        task = task_of(replace(call, task=call.task or EMBED_TASK), policy)[0]
        if not embeds(policy, task):
            raise ValidationError(f"Task {task} is not for embeddings: use task {EMBED_TASK} or name a model.",
                                  fields={"context.task": f"not an embeddings task; use {EMBED_TASK}"})
        listed = policy_candidates(policy, task, catalog, settings)
    configured = configured_providers(catalog, settings)
    offered = sorted((c for c in listed if c.model.provider in configured),
                     key=lambda c: (c.model.status == "deprecated", not c.model.has_price, c.model.price_input or 0.0,
                                    c.position))
    if not offered:
        raise CapabilityMissing("No embedding model's provider is configured here"
                                + (f" (task {task})." if task else "."), fields={"model": "auto"})
    chosen = offered[0]
    return chosen.resolved, f"{f'Task {task}' if task else 'auto'}: {chosen.model.id} is the cheapest configured " \
                            "embedding model."
