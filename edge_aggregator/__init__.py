"""Edge aggregator: authenticates hospitals' encrypted uploads, adds them homomorphically into one running
sum per round without any secret key, and forwards one signed `EdgeAggregate` to the cloud.

`create_app` / `run` live in `edge_aggregator.app`; the core (`EdgeAggregator`) in `edge_aggregator.aggregator`.
"""
