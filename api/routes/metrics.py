"""GET /metrics: Prometheus text, read from the job store, the worker pool and the data dir at scrape time.

No auth (like /healthz: a scraper has no API key), so nothing in it names an owner, a key or a job: labels are
only kinds, statuses, worker states and disk areas. Everything is read when scraped (a custom collector on a
registry of this app's own), so the numbers are the store's and survive an API restart:

    avgen_queue_depth                                   queued jobs, all owners
    avgen_jobs{kind, status}                            jobs in the store
    avgen_job_duration_seconds{kind, status}            histogram: first start to finish of finished jobs that ran
                                                        (an expired job counts as the succeeded job it was)
    avgen_workers{state=loading|idle|busy|dead}         the pool's actors (none without a pool)
    avgen_worker_busy_ratio                             busy / (idle + busy) loaded actors; 0 when none is loaded
    avgen_disk_bytes{area=uploads|results}              bytes stored
    avgen_disk_limit_bytes, avgen_retention_seconds     the settings (the first only with --max-disk)
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from workers.jobs import Status

router = APIRouter(tags=["health"])

DURATION_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600]
WORKER_STATES = ("loading", "idle", "busy", "dead")


class ServiceCollector:
    def __init__(self, state):
        self.state = state  # the app's state: store, artifacts, pool, config

    def collect(self):
        store, config = self.state.store, self.state.config
        counts = store.kind_counts()
        queued = GaugeMetricFamily("avgen_queue_depth", "Jobs waiting for a worker (all owners)")
        queued.add_metric([], sum(n for (_, status), n in counts.items() if status == Status.QUEUED))
        yield queued

        jobs = GaugeMetricFamily("avgen_jobs", "Jobs in the store by kind and status", labels=["kind", "status"])
        for kind in sorted({kind for kind, _ in counts}):
            for status in Status:
                jobs.add_metric([kind, status.value], counts.get((kind, status), 0))
        yield jobs

        durations = HistogramMetricFamily(
            "avgen_job_duration_seconds",
            "Run time (first start to finish) of finished jobs, by kind and final status",
            labels=["kind", "status"],
        )
        for (kind, status), (cumulative, count, total) in sorted(store.duration_histogram(DURATION_BUCKETS).items()):
            buckets = [(str(float(b)), n) for b, n in zip(DURATION_BUCKETS, cumulative)] + [("+Inf", count)]
            durations.add_metric([kind, status], buckets, total)
        yield durations

        workers = dict.fromkeys(WORKER_STATES, 0)
        pool = self.state.pool
        for slot in list(pool.slots) if pool is not None else []:
            state = "dead" if slot.dead else "loading" if not slot.loaded else "busy" if slot.job else "idle"
            workers[state] += 1
        family = GaugeMetricFamily("avgen_workers", "Worker actors of the pool by state", labels=["state"])
        for state, n in workers.items():
            family.add_metric([state], n)
        yield family
        loaded = workers["idle"] + workers["busy"]
        yield GaugeMetricFamily(
            "avgen_worker_busy_ratio",
            "Busy share of the loaded workers",
            value=workers["busy"] / loaded if loaded else 0,
        )

        disk = GaugeMetricFamily("avgen_disk_bytes", "Bytes stored in the data dir", labels=["area"])
        for area, n in self.state.artifacts.disk_bytes().items():
            disk.add_metric([area], n)
        yield disk
        if config.max_disk_bytes is not None:
            yield GaugeMetricFamily("avgen_disk_limit_bytes", "--max-disk", value=config.max_disk_bytes)
        yield GaugeMetricFamily("avgen_retention_seconds", "--retention", value=config.retention_seconds)


def new_registry(state) -> CollectorRegistry:
    """A registry of this app's own (never the process-wide one: tests run several apps in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(state))
    return registry


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request):
    """Prometheus text exposition; no auth, and no owner, key or job id in it."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
