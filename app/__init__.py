"""The application layer: wires the layers below into processes and the `citywatch` command.

`app.cli` is the console script, `app.service` runs the service (the ingest pipeline with
the alert engine and the HTTP API attached), `app.preflight` checks every setting before
anything starts. Nothing below imports this package.
"""
