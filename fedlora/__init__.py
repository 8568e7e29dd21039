"""The composition root above the tiers: the `fedlora` command line, the launcher that runs a cloud, edges
and hospitals as processes (`fedlora demo`), the views, the one-process simulation and the experiments.

Only this package imports the tiers (`client_agent`, `edge_aggregator`, `cloud_server`); the layer
contracts in `pyproject.toml` keep it so.
"""
