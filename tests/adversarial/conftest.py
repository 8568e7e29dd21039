# The attacks run against the in-process cloud on both stores, as the cloud's own tests do.
from tests.cloud.conftest import (  # noqa: F401
    _every_cloud_on_the_state_store,
    anyio_backend,
    pytest_generate_tests,
)

# The simulation and experiment reviews train on the e2e tests' tiny model.
from tests.e2e.conftest import tiny_model_dir  # noqa: F401
