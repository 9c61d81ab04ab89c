"""/api/stats: the engine's counters, among them the share of prompt tokens from cache."""

from __future__ import annotations

from fastapi import APIRouter

from limelight.server.deps import CallerDep, ServicesDep

router = APIRouter(prefix="/api", tags=["stats"])


@router.get("/stats")
def read_stats(svc: ServicesDep, _: CallerDep) -> dict[str, float | int | str]:
    stats = svc.engine.engine.stats
    return {
        "model": svc.model_name,
        "prefix_cache_hit_rate": stats.prefix_hit_rate,
        "prompt_tokens_looked_up": stats.num_prefix_lookup_tokens,
        "prompt_tokens_from_cache": stats.num_prefix_hit_tokens,
        "steps": stats.num_steps,
        "preemptions": stats.num_preemptions,
    }
