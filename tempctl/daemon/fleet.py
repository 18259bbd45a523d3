"""The daemon's optional extras, built from settings: metrics, alerts, retention.

``tempctl run`` calls ``daemon_extras(settings)`` and hands ``observers`` and
``maintenance`` to ``Daemon``; ``close()`` stops the endpoint and the alert thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RETENTION_PERIOD_S = 1.0  # how often the job is called; it folds once a day, in short batches


@dataclass
class Extras:
    observers: list = field(default_factory=list)
    maintenance: list = field(default_factory=list)  # [(period_s, fn(log, now_ms))]
    metrics: object | None = None  # metrics.Metrics
    metrics_port: int | None = None
    alerter: object | None = None  # alerts.Alerter

    def attach(self, devices) -> None:
        """Show every configured device on the metrics page before its first poll ends."""
        if self.metrics is not None:
            for d in devices:
                self.metrics.watch(d)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.alerter is not None:
            self.alerter.close()


def daemon_extras(settings) -> Extras:
    """Metrics endpoint (TEMPCTL_METRICS_PORT), webhook alerts (TEMPCTL_ALERT_URL) and the
    daily retention job (TEMPCTL_RETENTION_DAYS), each only when configured.

    Raises OSError when the metrics port cannot be bound.
    """
    # Imported only when used: prometheus-client costs memory a small Pi may want back.
    extras = Extras()
    if settings.metrics_port:
        from tempctl.daemon.metrics import Metrics

        m = Metrics()
        extras.metrics_port = m.serve(settings.metrics_host, settings.metrics_port)
        extras.metrics = m
        extras.observers.append(m)
    if settings.alert_url:
        from tempctl.daemon.alerts import Alerter
        from tempctl.device import read_password_file

        path = settings.alert_password_file
        password = read_password_file(path) if path else None  # read here, never shown
        extras.alerter = Alerter(settings.alert_url, password=password)
        extras.observers.append(extras.alerter)
    if settings.retention_days > 0:
        from tempctl.store.retention import Retention, min_keep_ms

        job = Retention(settings.retention_days, min_keep_ms=min_keep_ms(settings))
        extras.maintenance.append((RETENTION_PERIOD_S, job))
    return extras
