"""How a service's Redis client speaks TLS (`rediss://`): the CA that signs the server's certificate and,
for a Redis that asks for one (`tls-auth-clients yes`), the client's own certificate and key.

The server's certificate is always verified, host name included; nothing here turns that off, and
`open_store` refuses a URL whose query (`?ssl_cert_reqs=none`, `?ssl_check_hostname=false`) would, since
redis-py lets the URL override its arguments. The files are checked when the store is opened, so a missing
or unreadable one stops the service at start-up with the setting's name instead of failing every request.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StoreTLSError(ValueError):
    """A TLS setting of the store that cannot be used: names the setting, the file and the reason."""


@dataclass(frozen=True)
class StoreTLS:
    """`ca_file`: the CA bundle the server's certificate must chain to (None: the system's trust store);
    `cert_file`/`key_file`: the client's certificate and key, both or neither."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise StoreTLSError(
                "store_cert_file and store_key_file go together: set both (a client certificate) or neither, "
                f"got store_cert_file={_text(self.cert_file)!r}, store_key_file={_text(self.key_file)!r}"
            )

    def redis_options(self) -> dict[str, Any]:
        """redis-py's connection arguments for these files, each checked with the `ssl` module first."""
        self.check()  # redis-py builds its own context from the same files, per connection
        return {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": _text(self.ca_file),
            "ssl_certfile": _text(self.cert_file),
            "ssl_keyfile": _text(self.key_file),
        }

    def check(self) -> None:
        """Load the files into a throw-away `ssl` context: `StoreTLSError` naming the setting if one fails."""
        try:
            context = ssl.create_default_context(cafile=_text(self.ca_file))
        except (OSError, ssl.SSLError) as e:
            raise StoreTLSError(
                f"store_ca_file {_text(self.ca_file)!r} cannot be used as a CA bundle: {e}"
            ) from e
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as e:
                raise StoreTLSError(
                    f"store_cert_file {str(self.cert_file)!r} with store_key_file {str(self.key_file)!r} "
                    f"cannot be used as a client certificate: {e}"
                ) from e


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
