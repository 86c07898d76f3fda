"""/healthz (the process answers) and /readyz (the store is writable and the worker pool is ready)."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request

from api.problems import problem, responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@router.get("/readyz", responses=responses(503))
def readyz(request: Request):
    state = request.app.state
    checks = {}
    try:
        state.store.counts()
        checks["store"] = "ok" if os.access(state.store.path, os.W_OK) else "the job store file is not writable"
    except Exception as e:  # noqa: BLE001 - any failure means not ready, said in one line
        checks["store"] = f"{type(e).__name__}: {e}"
    if state.pool is not None:
        try:
            checks["pool"] = "ok" if state.pool.ready() else "the worker pool is starting"
        except Exception as e:  # noqa: BLE001
            checks["pool"] = f"{type(e).__name__}: {e}"
    bad = {k: v for k, v in checks.items() if v != "ok"}
    if bad:
        return problem(503, "; ".join(f"{k}: {v}" for k, v in bad.items()), checks=checks)
    return {"status": "ready", "checks": checks}
