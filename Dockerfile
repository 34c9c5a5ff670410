# syntax=docker/dockerfile:1
# The coursecast server image: built in the Rust image, run as a non-root user on a
# slim Debian with nothing but the binary. compose.yaml runs two of these behind
# nginx with PostgreSQL and Redis (docs/OPERATIONS.md, "Containers").

FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependency-cache layer: the manifests with stub sources, so that changing the
# server's code does not rebuild its ~300 dependencies.
COPY Cargo.toml Cargo.lock ./
COPY crates/coursecast/Cargo.toml crates/coursecast/
COPY crates/coursecast-client/Cargo.toml crates/coursecast-client/
COPY crates/coursecast-bench/Cargo.toml crates/coursecast-bench/
COPY bench/bare-socketioxide/Cargo.toml bench/bare-socketioxide/
RUN for member in crates/coursecast crates/coursecast-client crates/coursecast-bench bench/bare-socketioxide; do \
      mkdir -p "$member/src" && echo 'fn main() {}' > "$member/src/main.rs" && : > "$member/src/lib.rs"; \
    done \
 && cargo build --release --locked -p coursecast \
 && rm -rf crates/coursecast/src target/release/.fingerprint/coursecast-*

# The server itself (its migrations and dashboard are compiled in).
COPY crates/coursecast crates/coursecast
RUN cargo build --release --locked -p coursecast --bin coursecast \
 && install -D -m 0755 target/release/coursecast /out/coursecast

FROM debian:bookworm-slim
# The data directory exists in the image, owned by the user, so that a volume
# mounted there starts with that ownership (Docker copies it into a new volume).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/coursecast --create-home coursecast \
 && install -d -o coursecast -g coursecast -m 0750 /var/lib/coursecast/data
COPY --from=build /out/coursecast /usr/local/bin/coursecast
USER coursecast
WORKDIR /var/lib/coursecast
# SQLite and the generated JWT secret live here when no DATABASE_URL / JWT_SECRET is set.
ENV HOST=0.0.0.0 PORT=3000 DATA_DIR=/var/lib/coursecast/data
VOLUME ["/var/lib/coursecast/data"]
EXPOSE 3000
# The binary asks its own /healthz (GET on HOST:PORT, 2 s deadline): no curl needed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["coursecast", "healthcheck"]
# The README's production command: `coursecast serve` (migrations run on start).
ENTRYPOINT ["coursecast"]
CMD ["serve"]
