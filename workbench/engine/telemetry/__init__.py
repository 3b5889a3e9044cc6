"""What the service tells about itself: latency histograms, Prometheus metrics, logs, profiles."""
