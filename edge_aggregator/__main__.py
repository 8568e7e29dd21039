"""`python -m edge_aggregator`: run the edge aggregator service."""

from edge_aggregator.app import run

if __name__ == "__main__":
    run()
