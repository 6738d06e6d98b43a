"""`citywatch run`: the ingest pipeline with the alert engine and the HTTP API attached.

The pipeline itself — consumer, decode, committer, spool, writer, the HJ 212 gateway, the
shutdown order — is `ingest.service.run_service`; this module only adds what sits above
it, through `ingest.service.Attachments`: the alert engine subscribed to the validated
stream before the first commit, and the API served by uvicorn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from prometheus_client.core import GaugeMetricFamily, Metric

from alerts import AlertEngine, build_alerting
from alerts.store import AlertStore
from api.app import create_app, server_config
from citywatch.net import is_loopback
from citywatch.settings import Settings
from ingest.service import Attachments, Ingest, IngestProcesses, run_service

log = logging.getLogger("citywatch.service")


async def run(settings: Settings, *, workers: IngestProcesses | None = None, alerts: bool = True, api: bool = True,
              hj212_listen: str | None = None, mqtt: bool = True) -> None:
    """The service in this process until SIGTERM/SIGINT (see `ingest.service.run_service`)."""
    with_alerts = alerts and settings.alerts_enabled

    def attach(ingest: Ingest) -> Attachments:
        attached = Attachments()
        engine = None
        if with_alerts:
            engine, attached.tasks = build_alerting(settings, registry=ingest.registry, sink=ingest.committer,
                                                    stream=ingest.stream.subscribe(max_batches=1024))
            ingest.alert_store = engine.store
            disk = ingest.disk
            if disk is not None:  # the spool has the data disk first (alerts/snapshots.py)
                engine.snapshots.defer = disk.defer_write
            ingest.metrics.registry.register(AlertStoreCollector(engine.store))
            attached.aclose = engine.aclose
        server = api_server(settings, ingest, engine) if api else None
        if server is not None:
            attached.server = server
            # Open SSE streams would keep uvicorn waiting: they end first.
            attached.before_server_stop = server.config.app.state.shutdown_streams
        return attached

    await run_service(settings, attach=attach, hj212_listen=hj212_listen, mqtt=mqtt, workers=workers)


class AlertStoreCollector:
    """/metrics: whether the alert state's writes fail, and how many wait in memory."""

    def __init__(self, store: AlertStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        failing = GaugeMetricFamily("citywatch_alert_state_failing",
                                    "1 while alert state writes fail (disk full); they wait in memory")
        failing.add_metric([], 1.0 if self._store.failing else 0.0)
        yield failing
        held = GaugeMetricFamily("citywatch_alert_state_deferred",
                                 "Alert state transactions held in memory until the disk takes them")
        held.add_metric([], float(self._store.deferred_count))
        yield held


def api_server(settings: Settings, ingest: Ingest | None, engine: AlertEngine | None) -> uvicorn.Server | None:
    """The HTTP API and dashboard under uvicorn, or None with a log line saying how to enable it."""
    if settings.api_tokens is None or not settings.api_tokens.get_secret_value().strip():
        log.info("HTTP API not served: set CW_API_TOKENS='token=admin,...' (roles viewer, operator, admin)")
        return None
    app = create_app(settings=settings, ingest=ingest, engine=engine, warm=True)
    config = server_config(app, settings)
    if settings.api_tls_cert is None and not is_loopback(settings.api_host):
        log.warning("the HTTP API listens on %s without TLS: bearer tokens cross the network in clear text. Set "
                    "CW_API_TLS_CERT and CW_API_TLS_KEY, or keep it behind a TLS-terminating reverse proxy on a "
                    "private network (see api/README.md)", settings.api_host)
    server = uvicorn.Server(config)
    # uvicorn takes SIGTERM/SIGINT over while it serves (and raises them again once it has
    # stopped); ours stop everything in order (ingest.service.run_service), so it gets none.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    return server
