"""The monitoring sidecar: a reverse proxy in front of the model server that exports Prometheus
metrics and data-drift scores. It imports nothing from the operator's handlers or API client."""
