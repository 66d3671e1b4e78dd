# quantd image: build on Debian 12 with the same install script as `make run`, run as non-root
# (uid/gid 10001) from a slim runtime stage. Everything quantd writes lives on the volume
# /var/lib/quantd: the database in db/, backups (RocksDB checkpoints, hard links, so on the same
# filesystem) in backups/. Ports: 50051 gRPC, 50052 plaintext gRPC health only (for Kubernetes
# probes, which cannot do TLS), 9464 Prometheus /metrics. Kubernetes: deploy/k8s/README.md.
#   docker build -t quantd .
#   docker run -p 50051:50051 -p 50052:50052 -p 9464:9464 -v quantd-data:/var/lib/quantd quantd
# A host directory as the volume must belong to uid 10001: chown 10001:10001 /srv/quantd first.
FROM debian:bookworm AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
RUN bash deploy/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt ./
COPY proto proto
COPY core core
COPY io io
COPY server server
COPY client client
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DQUANTD_BUILD_TESTS=OFF \
      -DQUANTD_BUILD_BENCH=OFF \
 && cmake --build build -j"$(nproc)" \
 && strip build/server/quantd build/client/quantctl

FROM debian:bookworm-slim
COPY deploy/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh runtime && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && groupadd --system --gid 10001 quantd \
 && useradd --system --uid 10001 --gid quantd --home-dir /var/lib/quantd --shell /usr/sbin/nologin quantd \
 && mkdir -p /var/lib/quantd && chown quantd:quantd /var/lib/quantd
COPY --from=build /src/build/server/quantd /src/build/client/quantctl /usr/local/bin/
# QUANTD_SHUTDOWN_GRACE 8 (the binary's default is 20): `docker stop` sends SIGKILL after 10 s
# unless told otherwise, so the drain (8 s at most) and closing RocksDB fit in that. For a longer
# drain raise both: docker run --stop-timeout 30 -e QUANTD_SHUTDOWN_GRACE=25 ... (Kubernetes sets
# its own pair, see deploy/k8s).
ENV QUANTD_LISTEN=0.0.0.0:50051 \
    QUANTD_HEALTH_LISTEN=0.0.0.0:50052 \
    QUANTD_METRICS_ADDR=0.0.0.0:9464 \
    QUANTD_DATA_DIR=/var/lib/quantd/db \
    QUANTD_BACKUP_DIR=/var/lib/quantd/backups \
    QUANTD_SYNC=true \
    QUANTD_SHUTDOWN_GRACE=8
VOLUME /var/lib/quantd
EXPOSE 50051 50052 9464
USER 10001:10001
STOPSIGNAL SIGTERM
# `quantctl health` asks the plaintext health port (no TLS or token needed): exit 0 only when
# SERVING, so the container is unhealthy while the database opens, while it drains, and when
# quantd hangs. With QUANTD_HEALTH_LISTEN changed or empty, override it (--health-cmd).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/quantctl", "--addr", "127.0.0.1:50052", "--timeout", "3", "health"]
ENTRYPOINT ["/usr/local/bin/quantd"]
