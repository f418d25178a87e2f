# sluice container image: a build stage with the Debian toolchain, then a runtime stage with only the
# shared libraries the two binaries link. Build from the repository root:
#   docker build -t sluice:dev .
#   BUILDAH_ISOLATION=chroot podman build --format docker -t sluice:dev .   (docker format keeps HEALTHCHECK)

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      cmake g++ make libboost1.81-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads, least often changed first, so an edit under src/ reuses the toolchain layer
# and a config edit rebuilds nothing. Tests and benchmarks are not built into the image.
COPY CMakeLists.txt ./
COPY cmd/ cmd/
COPY src/ src/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSLUICE_BUILD_TESTS=OFF -DSLUICE_BUILD_BENCH=OFF \
 && cmake --build build --target sluice sluice-echo -j"$(nproc)" \
 && mkdir -p /out \
 && strip --strip-unneeded -o /out/sluice build/sluice \
 && strip --strip-unneeded -o /out/sluice-echo build/sluice-echo

FROM debian:bookworm-slim AS runtime
# The runtime halves of libyaml-cpp-dev, libspdlog-dev and libfmt-dev; Boost is header-only here.
# Clean apt's caches in this same layer (tens of MB otherwise), whatever the base image's apt settings.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libyaml-cpp0.7 libspdlog1.10 libfmt9 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/* \
             /usr/share/doc/* /usr/share/man/* /usr/share/info/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin sluice
COPY --from=build /out/sluice /out/sluice-echo /usr/local/bin/
# The example config listens on 0.0.0.0:8080 (reachable through a published port) and keeps the admin
# listener on 127.0.0.1:9901: inside the container only, which is where the HEALTHCHECK probes it.
COPY config/sluice.yaml /etc/sluice/sluice.yaml

# One flattened layer: a base image built locally (debootstrap) can carry apt's download cache in its own
# layer, which no later layer can remove; copying the cleaned root file system drops it.
FROM scratch
COPY --from=runtime / /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 9901
# SIGTERM drains (CONTRACT.md "Signals"): give `docker stop -t` more than drain.delay + drain.timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["sluice", "--probe", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["sluice", "--config", "/etc/sluice/sluice.yaml"]
