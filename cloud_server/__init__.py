"""The fedlora cloud: federations and keys, the round state machine, decryption of the global sum only,
central DP noise, and the adapter registry (`create_app`, `python -m cloud_server`)."""
