import inspect
import os

import pytest

from tests.cloud import harness
from tests.conftest import STORE_BACKENDS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_generate_tests(metafunc):
    # Every async cloud test (they run clouds) runs twice: on the in-memory store and on a real Redis.
    if inspect.iscoroutinefunction(metafunc.function) and "state_store" not in metafunc.fixturenames:
        metafunc.fixturenames.append("state_store")
        metafunc.parametrize("state_store", STORE_BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def _every_cloud_on_the_state_store(request):
    # `pytest_generate_tests` parametrizes `state_store` without adding it to the fixtures the test
    # requested (`request.fixturenames`); its callspec names it.
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "state_store" in callspec.params:
        harness.default_store = request.getfixturevalue("state_store")
    yield
    harness.default_store = None
