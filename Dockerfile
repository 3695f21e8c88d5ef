# forkserve: the release binary on a slim base, as an unprivileged user.
#   docker build -t forkserve .
#   docker run --rm -p 8000:8000 forkserve

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not re-download them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src
COPY src ./src
RUN cargo build --release --locked --bin forkserve

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin forkserve
COPY --from=build /src/target/release/forkserve /usr/local/bin/forkserve
COPY config /etc/forkserve
USER forkserve
EXPOSE 8000
# docker stop sends this: in-flight requests finish, then the master exits 0.
STOPSIGNAL SIGTERM
# The container's port must be reachable from outside it, so bind every interface.
ENTRYPOINT ["forkserve", "--bind", "0.0.0.0:8000"]
CMD ["/etc/forkserve/app.toml"]
