"""Key-encryption keys for tests: the one every test cloud runs under (`tests.cloud.harness.running_cloud`'s
default), the one a rotation moves to, and one that is neither."""

KEK = bytes.fromhex("8f3b0c5e1d2a4f6b7c9e0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f")
NEXT_KEK = bytes.fromhex("3c9d7e21a5f04b68c2d1e0f9a8b7c6d5e4f30112233445566778899aabbccdde")
FOREIGN_KEK = bytes(range(32))
