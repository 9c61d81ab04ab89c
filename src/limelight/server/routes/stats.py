"""/api/stats: the engine's counters (the share of prompt tokens from cache among them)
and the memory jobs still waiting."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from limelight.server.deps import CallerDep, DatabaseDep, ServicesDep
from limelight.store import MemoryJob

router = APIRouter(prefix="/api", tags=["stats"])


@router.get("/stats")
def read_stats(svc: ServicesDep, db: DatabaseDep, _: CallerDep) -> dict[str, float | int | str]:
    stats = svc.engine.engine.stats
    pending = select(func.count()).where(MemoryJob.status == "pending")
    return {
        "model": svc.model_name,
        "prefix_cache_hit_rate": stats.prefix_hit_rate,
        "prompt_tokens_looked_up": stats.num_prefix_lookup_tokens,
        "prompt_tokens_from_cache": stats.num_prefix_hit_tokens,
        "steps": stats.num_steps,
        "preemptions": stats.num_preemptions,
        "memory_jobs_pending": db.scalar(pending) or 0,
    }
