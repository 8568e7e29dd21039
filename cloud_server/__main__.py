"""`python -m cloud_server`: run the cloud service."""

from cloud_server.server import run

if __name__ == "__main__":
    run()
