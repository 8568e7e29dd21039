"""Example payloads of the wire models, as JSON, for the OpenAPI documents (`json_schema_extra`).

Plain data, so `protocol.messages` can import it without a cycle. Every example must validate against its
own model (tests/cloud/test_openapi.py and tests/edge/test_openapi.py check each one in the served
documents). Byte fields hold short base64 placeholders that say what they stand for; tokens are visibly
not secrets.
"""

from __future__ import annotations

from typing import Any

FID = "discharge-notes-2026"
OPENED_AT = "2026-03-01T12:00:00Z"
# Ed25519 public keys of the private keys 32 x 0x01 and 32 x 0x02: keys are checked to be valid points of
# prime order, so an example holds a real one (its private half is public, never use it).
PUBLIC_KEY_NORTH_1 = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w="
PUBLIC_KEY_EDGE = "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q="
SIGNATURE = "A" * 86 + "=="  # 64 zero bytes where an Ed25519 signature goes
CIPHERTEXT = (
    "cGxhY2Vob2xkZXI6IGEgc2VyaWFsaXplZCBDS0tTIGNpcGhlcnRleHQ="  # "placeholder: a serialized CKKS ciphertext"
)
CIPHERTEXT_SUM = "cGxhY2Vob2xkZXI6IGEgc2VyaWFsaXplZCBDS0tTIHN1bQ=="  # "placeholder: a serialized CKKS sum"
HE_FINGERPRINT = "a51916d1e41da7e1f3d811767615f957108e49bb7c2490024d6f5364d6eeaa8f"
LAYOUT_DIGEST = "b193374c98185e72bd131e4e6f4495b48de9e055db33a1dd92386e2e85f045e2"
EDGE_URL = "https://edge-north.example.org:8710"
PUBLIC_KEY_PLANS = "7UkoxijRwsbq6QM4kFmVYSlZJzpcY/k2NsFGFKyHN9E="  # of the private key 32 x 0x03
VECTOR_SHA256 = "3f0a9c1e5b7d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8d0f1a"
BASIS_SHA256 = "7c2e4a6b8d0f1e3c5a7b9d2f4e6a8c0b1d3f5e7a9c2b4d6f8e0a1c3b5d7f9e2a"
PLAN_SHA256 = "d41f6a2c8e0b3d5f7a9c1e2b4d6f8a0c3e5b7d9f1a2c4e6b8d0f3a5c7e9b1d2f"

FEDERATION_SPEC: dict[str, Any] = {
    "federation_id": FID,
    "base_model": "sentence-transformers/all-MiniLM-L6-v2",
    "num_labels": 2,
    "target_modules": ["query", "value"],
    "r_max": 8,
    "lora_alpha": 16.0,
    "seed": 20260301,
    "strategy": "ffa",
    "he": {"kind": "ckks", "poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 60]},
    "local_dp": {"enabled": True, "epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0},
    "central_dp": {
        "mechanism": "gaussian",
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "epsilon_budget": 10.0,
        "delta": 1e-5,
    },
    "training": {"learning_rate": 0.5, "local_steps": 20, "batch_size": 32, "max_seq_length": 64},
    "rank_policy": {"kind": "data_size", "examples_for_r_max": 5000},
    "rounds": 20,
    "min_clients_per_edge": 2,
    "quorum": 0.8,
    "round_deadline_s": 1800.0,
    "upload_deadline_s": 1500.0,
}
FEDERATION_SPEC_MINIMAL: dict[str, Any] = {"federation_id": "sentiment-demo"}

FEDERATION_CREATED: dict[str, Any] = {
    "federation_id": FID,
    "he_fingerprint": HE_FINGERPRINT,
}

ENROLMENT_TOKEN_REQUEST: dict[str, Any] = {"role": "client", "subject": "hospital-north-1", "ttl_s": 604800}
ENROLMENT_TOKEN_ID = "5e1d9a3c7b2f4e6a8c0d1f3b5a7c9e2d4f6b8a0c1e3d5f7b9a2c4e6d8f0b1a3c"  # noqa: S105 - a digest
ENROLMENT_TOKEN_ISSUED: dict[str, Any] = {
    "federation_id": FID,
    "token_id": ENROLMENT_TOKEN_ID,
    "role": "client",
    "subject": "hospital-north-1",
    "enrolment_token": "example-enrolment-token-not-a-secret",
    "issued_at": "2026-03-01T11:45:00Z",
    "expires_at": "2026-03-08T11:45:00Z",
}
ENROLMENT_TOKEN_INFO: dict[str, Any] = {
    "token_id": ENROLMENT_TOKEN_ID,
    "role": "client",
    "subject": "hospital-north-1",
    "issued_at": "2026-03-01T11:45:00Z",
    "expires_at": "2026-03-08T11:45:00Z",
    "state": "used",
    "used_at": "2026-03-01T12:10:00Z",
}
ENROLMENT_NONCE = "9f2c4e6a8b0d1f3a5c7e9b2d4f6a8c0e"
ENROLMENT_CHALLENGE: dict[str, Any] = {
    "federation_id": FID,
    "nonce": ENROLMENT_NONCE,
    "expires_at": "2026-03-01T12:02:00Z",
}

FEDERATION_INFO: dict[str, Any] = {
    "spec": FEDERATION_SPEC,
    "state": "active",
    "created_at": "2026-03-01T11:40:00Z",
    "he_fingerprint": HE_FINGERPRINT,
    "layout_size": 37634,  # 12 LoRA modules x 384 x r_max 8, plus the 2 x 384 head and its bias
    "layout_digest": LAYOUT_DIGEST,
    "current_round": 3,
    "adapter_version": 3,
    "plan_public_key": PUBLIC_KEY_PLANS,
}

EDGE_ENROLMENT: dict[str, Any] = {
    "edge_id": "edge-north",
    "url": EDGE_URL,
    "public_key": PUBLIC_KEY_EDGE,
    "nonce": ENROLMENT_NONCE,
    "signature": SIGNATURE,
}

CLIENT_ENROLMENT: dict[str, Any] = {
    "client_id": "hospital-north-1",
    "edge_id": "edge-north",
    "public_key": PUBLIC_KEY_NORTH_1,
    "num_examples": 1200,
    "max_rank": 8,
    "nonce": ENROLMENT_NONCE,
    "signature": SIGNATURE,
}

ENROLLED: dict[str, Any] = {
    "federation_id": FID,
    "subject": "hospital-north-1",
    "role": "client",
    "api_token": "example-api-token-not-a-secret",
    "edge_url": EDGE_URL,
}

EDGE_INFO: dict[str, Any] = {
    "edge_id": "edge-north",
    "url": EDGE_URL,
    "public_key": PUBLIC_KEY_EDGE,
    "enrolled_at": "2026-03-01T11:45:00Z",
}

CLIENT_INFO: dict[str, Any] = {
    "client_id": "hospital-north-1",
    "edge_id": "edge-north",
    "public_key": PUBLIC_KEY_NORTH_1,
    "num_examples": 1200,
    "rank": 8,
    "enrolled_at": "2026-03-01T11:50:00Z",
    "last_seen": "2026-03-01T13:02:10Z",
    "local_epsilon": 2.1,
    "rounds_contributed": 3,
    "max_rank": 8,
}

TRAINING: dict[str, Any] = {
    "learning_rate": 0.5,
    "local_steps": 20,
    "batch_size": 32,
    "max_seq_length": 64,
    "optimizer": "sgd",
}

ROUND_PLAN: dict[str, Any] = {
    "federation_id": FID,
    "round": 3,
    "adapter_version": 3,
    "basis_version": 0,
    "deadline": "2026-03-01T13:25:00Z",
    "client_ranks": {
        "hospital-north-1": 8,
        "hospital-north-2": 4,
        "hospital-south-1": 8,
        "hospital-south-2": 6,
    },
    "clip_norm": 1.0,
    "training": TRAINING,
    "local_dp": {"enabled": True, "epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0, "accountant": "rdp"},
    "layout_digest": LAYOUT_DIGEST,
    "clip_norm_ord": 2,
    "weighting": "uniform",
    "weight_cap": 1000,
    "vector_sha256": VECTOR_SHA256,
    "basis_sha256": BASIS_SHA256,
    "published_rank": 8,
    "signature": SIGNATURE,
}

LOCAL_SPEND: dict[str, Any] = {
    "epsilon": 2.1,
    "delta": 1e-5,
    "accountant": "rdp",
    "history": [[1.1, 0.027, 80]],
    "budget": 8.0,
}

CLIENT_UPDATE: dict[str, Any] = {
    "federation_id": FID,
    "round": 3,
    "basis_version": 0,
    "client_id": "hospital-north-1",
    "rank": 8,
    "weight": 1.0,
    "num_examples": 1200,
    "nonce": "6f1d0c2b9a8e7f6d5c4b3a2918070605",
    "ciphertext": CIPHERTEXT,
    "local_epsilon": 2.1,
    "local_privacy": LOCAL_SPEND,
    "validation_loss": 0.52,
    "validation_examples": 120,
    "signature": SIGNATURE,
    "plan_sha256": PLAN_SHA256,
}

EDGE_AGGREGATE: dict[str, Any] = {
    "federation_id": FID,
    "round": 3,
    "basis_version": 0,
    "edge_id": "edge-north",
    "ciphertext": CIPHERTEXT_SUM,
    "contributions": [
        {
            "client_id": "hospital-north-1",
            "weight": 1.0,
            "num_examples": 1200,
            "rank": 8,
            "nonce": "6f1d0c2b9a8e7f6d5c4b3a2918070605",
            "ciphertext_sha256": "50c3cb78d052bbe7a41ac9457efe025364bf54dd8ecd8a3dccaecd7c97d40f9d",
            "local_epsilon": 2.1,
            "validation_loss": 0.52,
            "validation_examples": 120,
        },
        {
            "client_id": "hospital-north-2",
            "weight": 1.0,
            "num_examples": 640,
            "rank": 4,
            "nonce": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "ciphertext_sha256": "e3659819d88b27b8cafe86588c924a6bf4ea884a26195113f828406430927917",
            "local_epsilon": 2.4,
            "validation_loss": 0.58,
            "validation_examples": 64,
        },
    ],
    "idempotency_key": f"{FID}:3:edge-north",
    "signature": SIGNATURE,
    "plan_sha256": PLAN_SHA256,
}

EDGE_PROGRESS: dict[str, Any] = {
    "edge_id": "edge-north",
    "expected_clients": 2,
    "uploads_accepted": 2,
    "uploads_refused": 1,
    "forwarded": True,
    "bytes_received": 1_310_720,
    "late_accepted": 0,
    "forwarded_at": "2026-03-01T13:21:07Z",
}

ROUND_STATUS_CLOSED: dict[str, Any] = {
    "federation_id": FID,
    "round": 2,
    "state": "closed",
    "opened_at": "2026-03-01T12:40:00Z",
    "closed_at": "2026-03-01T13:01:30Z",
    "duration_s": 1290.0,
    "adapter_version_in": 2,
    "adapter_version_out": 3,
    "edges": [
        {
            "edge_id": "edge-north",
            "expected_clients": 2,
            "uploads_accepted": 2,
            "forwarded": True,
            "bytes_received": 655_360,
            "forwarded_at": "2026-03-01T13:00:12Z",
        },
        {
            "edge_id": "edge-south",
            "expected_clients": 2,
            "uploads_accepted": 2,
            "forwarded": True,
            "bytes_received": 655_360,
            "forwarded_at": "2026-03-01T13:01:30Z",
        },
    ],
    "clients_contributed": 4,
    "total_weight": 4.0,
    "update_norm": 0.137,
    "published_rank": 8,
    # z C / W on every column (z = C = 1, W = 4): without normalize_rank_columns all columns share W.
    "column_noise_std": [0.25] * 8,
    "metrics": {
        "aggregation_s": 0.82,
        "edges_forwarded": 2.0,
        "noise_multiplier": 1.0,
        "noise_std": 0.25,
        "realised_noise_multiplier": 1.0,
        "validation_loss": 0.52,
    },
}

ROUND_STATUS_COLLECTING: dict[str, Any] = {
    "federation_id": FID,
    "round": 3,
    "state": "collecting",
    "opened_at": "2026-03-01T13:01:30Z",
    "adapter_version_in": 3,
    "edges": [
        {
            "edge_id": "edge-north",
            "expected_clients": 2,
            "uploads_accepted": 2,
            "forwarded": True,
            "bytes_received": 655_360,
            "forwarded_at": "2026-03-01T13:21:07Z",
        },
        {"edge_id": "edge-south", "expected_clients": 2, "uploads_accepted": 0},
    ],
    "clients_contributed": 2,
    "total_weight": 2.0,
}

ADAPTER_EVALUATION: dict[str, Any] = {
    "metrics": {"accuracy": 0.81, "loss": 0.43},
    "examples": 1000,
    "dataset": "rt_sentiment:test",
}

ADAPTER_VERSION: dict[str, Any] = {
    "federation_id": FID,
    "version": 3,
    "round": 2,
    "update_norm": 0.137,
    "created_at": "2026-03-01T13:01:30Z",
    "basis_version": 0,
    "evaluation": {**ADAPTER_EVALUATION, "evaluated_at": "2026-03-01T13:03:00Z"},
}

PRIVACY_REPORT: dict[str, Any] = {
    "federation_id": FID,
    "delta": 1e-5,
    "central_epsilon": 3.2,
    "central_budget": 10.0,
    "central_rounds": [
        {
            "round": 2,
            "mechanism": "gaussian",
            "noise_multiplier": 1.0,
            "clip_norm": 1.0,
            "epsilon_after": 3.2,
            "realised_noise_multiplier": 1.0,
            "clients": 4,
            "total_weight": 4.0,
            "column_noise_std": [0.25] * 8,
        }
    ],
    "clients": [
        {
            "client_id": "hospital-north-1",
            "local_epsilon": 2.1,
            "local_budget": 8.0,
            "rounds": [
                {
                    "round": 2,
                    "local_epsilon": 2.1,
                    "reported_epsilon": 2.05,
                    "noise_multiplier": 1.1,
                    "sample_rate": 0.027,
                    "steps": 80,
                }
            ],
            "reported_epsilon": 2.05,
            "local_delta": 1e-5,
        }
    ],
    "accountant": "rdp",
    "state": "active",
    "next_round_epsilon": 3.6,
    "planned_epsilon": 8.9,
    "local_accountant": "rdp",
    "decryptor_epsilon": None,
    "decryptor_unbounded": True,  # the cloud adds the noise itself: no guarantee against it
    "colluding_clients": 0,
    "budget_against": "public",
}

ERROR_WRONG_ROUND: dict[str, Any] = {
    "code": "wrong_round",
    "message": "round 4 has not opened; the current round is 3",
    "field": "round",
    "detail": {"current_round": 3},
}
ERROR_INVALID_REQUEST: dict[str, Any] = {
    "code": "invalid_request",
    "message": "r_max: Input should be greater than or equal to 1",
    "field": "r_max",
}

UPLOAD_ACCEPTED: dict[str, Any] = {"accepted": True, "count": 2}
UPLOAD_ACCEPTED_LATE: dict[str, Any] = {"accepted": True, "count": 2, "folded_into_round": 4}

# One `ErrorBody` per HTTP status the services document, for their OpenAPI error responses.
ERRORS_BY_STATUS: dict[int, dict[str, Any]] = {
    400: {
        "code": "bad_ciphertext",
        "message": "the ciphertext is a sum of 1 encryptions; the manifest names 2 clients",
        "field": "ciphertext",
    },
    401: {"code": "unauthenticated", "message": "unknown or revoked token"},
    403: {"code": "forbidden", "message": "this endpoint is for admin; the token is a client's"},
    404: {"code": "unknown_federation", "message": f"no federation '{FID}'", "field": "fid"},
    409: ERROR_WRONG_ROUND,
    410: {
        "code": "federation_not_active",
        "message": f"federation '{FID}' is completed: all 20 rounds closed",
        "detail": {"state": "completed"},
    },
    413: {
        "code": "payload_too_large",
        "message": "request body is too large: request body has at least 600000000 bytes, the limit is 536870912",
    },
    422: ERROR_INVALID_REQUEST,
    503: {
        "code": "store_unavailable",
        "message": "state store unavailable: redis://redis:6379/0 does not answer",
    },
}
