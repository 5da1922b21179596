"""Watching a run: the dashboard, its charts and browser login, ``/metrics``, the progress bar,
TensorBoard/MLflow tracking and the history's pandas/plot views. Driver side only."""
