"""What flowcall tells operators: Prometheus metrics, JSON logs, and the observer seam that lets
dispatch report without importing Prometheus."""
