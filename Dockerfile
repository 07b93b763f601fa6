# syntax=docker/dockerfile:1
# ringlb in a container: build on the Rust image, run on Debian slim as a
# non-root user. io_uring needs a seccomp profile that allows it (Docker's
# default blocks it since Docker 25); see README.md, "Containers":
#
#   docker build -t ringlb .
#   docker run --rm -p 8080:8080 -p 9090:9090 \
#       --security-opt seccomp=contrib/seccomp-io_uring.json ringlb

FROM rust:1-slim-trixie AS build
WORKDIR /src
COPY . .
# The release profile keeps line tables for profiling; the image does not
# need them. Cache mounts keep the registry and target dir between builds.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ringlb \
    && install -m 0755 target/release/ringlb /usr/local/bin/ringlb

FROM debian:trixie-slim
# A fixed numeric id, so that `runAsNonRoot` and volume ownership can rely
# on it.
RUN groupadd --system --gid 10001 ringlb \
    && useradd --system --uid 10001 --gid ringlb --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin ringlb
COPY --from=build /usr/local/bin/ringlb /usr/bin/ringlb
# The commented example config; mount your own over it.
COPY contrib/deb/ringlb.toml /etc/ringlb/ringlb.toml
USER 10001:10001
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/ringlb"]
# The demo, reachable from outside the container. For real use:
#   docker run ... -v "$PWD/ringlb.toml:/etc/ringlb/ringlb.toml:ro" ringlb \
#       run --config /etc/ringlb/ringlb.toml
# with `listen = ["0.0.0.0:8080"]` (not 127.0.0.1) in that file.
CMD ["demo", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9090"]
