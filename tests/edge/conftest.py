from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocol.crypto import CKKSParams, HEScheme, PaillierParams, generate_scheme, scheme_from_public
from protocol.messages import FederationSpec, FederationState
from services.identity import SigningKey
from services.store import StateStore
from tests.clock import FakeClock
from tests.edge.cloud import InMemoryCloud
from tests.edge.harness import FID, World, federation_info
from tests.edge.masking_cohort import HOSPITALS, STAGE_S


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def secret_scheme() -> HEScheme[Any]:
    """The cloud's key pair: only the tests decrypt, to check what the edge forwarded."""
    return generate_scheme(CKKSParams())


@pytest.fixture(scope="session")
def client_scheme(secret_scheme: HEScheme[Any]) -> HEScheme[Any]:
    """What a hospital holds: the public context only."""
    return scheme_from_public(secret_scheme.params, secret_scheme.public_bytes())


@pytest.fixture
def make_world(
    tmp_path: Path, secret_scheme: HEScheme[Any], client_scheme: HEScheme[Any], state_store: StateStore
) -> Callable[..., World]:
    """`make_world(clients=3, k=2, quorum=1.0, **spec_fields)`: a cloud with round 0 open for `clients`
    hospitals."""

    def build(*, clients: int = 3, k: int = 2, quorum: float = 1.0, **spec_fields: Any) -> World:
        # The session's key pair (CKKS) unless a test names another scheme; masking: make_masking_world.
        spec_fields.setdefault("he", secret_scheme.params)
        spec = FederationSpec(federation_id=FID, min_clients_per_edge=k, quorum=quorum, **spec_fields)
        plan_key = SigningKey.generate()
        cloud = InMemoryCloud(
            federation_info(spec, secret_scheme, state=FederationState.ACTIVE, plan_key=plan_key),
            secret_scheme.public_bytes(),
        )
        world = World(
            tmp_path, secret_scheme, client_scheme, spec, FakeClock(), state_store, cloud, plan_key=plan_key
        )
        for index in range(clients):
            world.enrol(f"hosp-{chr(ord('a') + index)}", seed=index)
        cloud.set_plan(world.plan(0))
        return world

    return build


@pytest.fixture(scope="session")
def masking_secret() -> HEScheme[Any]:
    """A masking federation's key pair (packed Paillier with an exact ring, 2048 bits: the least a spec accepts)."""
    return generate_scheme(PaillierParams(masking=True))


@pytest.fixture
def make_masking_world(
    tmp_path: Path, masking_secret: HEScheme[Any], state_store: StateStore
) -> Callable[..., World]:
    """`make_masking_world(clients=10, k=3, quorum=1.0)`: round 0 open for `clients` hospitals of a masking
    federation, the edge's `masking_stage_s` at `STAGE_S`."""

    def build(*, clients: int = len(HOSPITALS), k: int = 3, quorum: float = 1.0) -> World:
        spec = FederationSpec(
            federation_id=FID, min_clients_per_edge=k, quorum=quorum, he=masking_secret.params
        )
        plan_key = SigningKey.generate()
        public = scheme_from_public(masking_secret.params, masking_secret.public_bytes())
        cloud = InMemoryCloud(
            federation_info(spec, masking_secret, state=FederationState.ACTIVE, plan_key=plan_key),
            masking_secret.public_bytes(),
        )
        world = World(
            tmp_path, masking_secret, public, spec, FakeClock(), state_store, cloud, plan_key=plan_key
        )
        world.settings_overrides["masking_stage_s"] = STAGE_S
        for index in range(clients):
            world.enrol(f"hosp-{index:02d}", seed=index)
        cloud.set_plan(world.plan(0))
        return world

    return build
