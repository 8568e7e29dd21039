# The Redis that deploy/compose.yaml runs for each tier, where no registry is reachable: Debian bookworm's
# redis-server (7.0, built with TLS) on the locally built base of deploy/image.sh. Elsewhere the official
# `redis:7.2-alpine` serves the same (REDIS_IMAGE in deploy/.env): the compose file needs `redis-server` and
# `redis-cli` on the PATH, a user `redis` and a folder /data that user owns. The user is also in group 10001
# (the fedlora image's, which owns the Redis key store-users writes, 0640) here in the image, since
# podman-compose 1.0.3 drops compose's `group_add`.
ARG BASE_IMAGE=fedlora-base:bookworm
FROM localhost/${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data /usr/local/etc/redis \
 && chown redis:redis /data \
 && groupadd --system --gid 10001 fedlora \
 && usermod --append --groups fedlora redis
WORKDIR /data
USER redis
CMD ["redis-server"]
