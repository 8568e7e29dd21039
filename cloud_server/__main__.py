from cloud_server.server import run

run()
