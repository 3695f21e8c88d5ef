# forkserve serving a Python WSGI app (examples/python/hello.py, by config/python.toml): the
# release binary, linked against Debian bookworm's Python 3.11, on bookworm-slim with that same
# Python, as an unprivileged user.
#   docker build -t forkserve .
#   docker run --rm -p 8000:8000 forkserve
# Your own app: see "Docker" in the README (an image FROM this one, your code in /srv/app).

FROM rust:1-slim-bookworm AS build
# The Python the binary links against: the same Debian package the runtime stage installs.
# build.rs records it (PYO3_PYTHON) and gives the binary an rpath to its libpython.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PYO3_PYTHON=/usr/bin/python3.11
WORKDIR /src
# Dependencies first, so that a source change does not re-download them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src
COPY build.rs ./
COPY src ./src
RUN cargo build --release --locked --bin forkserve

FROM debian:bookworm-slim
# python3.11 and libpython3.11: the interpreter's standard library and the shared library the
# binary loads; python3.11-venv: a virtualenv with pip, for the app's packages.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 libpython3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin forkserve
# The app's virtualenv: forkserve runs the app with it ($VIRTUAL_ENV), as `pip install`s it.
ENV VIRTUAL_ENV=/opt/venv
RUN python3.11 -m venv /opt/venv
COPY examples/python/requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --from=build /src/target/release/forkserve /usr/local/bin/forkserve
# The repository's layout, so that config/python.toml's relative paths hold.
WORKDIR /srv/forkserve
COPY config ./config
COPY examples/python ./examples/python
USER forkserve
EXPOSE 8000
# docker stop sends this: in-flight requests finish, then the master exits 0.
STOPSIGNAL SIGTERM
# The container's port must be reachable from outside it, so bind every interface.
ENTRYPOINT ["forkserve", "--bind", "0.0.0.0:8000"]
CMD ["config/python.toml"]
