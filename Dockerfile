# kollate container image: a static-ish release binary on a slim Debian base.
#   docker build -t kollate .
#   docker run --rm kollate                      # replays the bundled example stream
#   docker run --rm -v $PWD/my.toml:/etc/kollate/kollate.toml kollate run --config /etc/kollate/kollate.toml
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY wit wit
RUN cargo build --release --locked --bin kollate

FROM debian:bookworm-slim
# librdkafka (Kafka source and sink) links OpenSSL for TLS.
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/kollate kollate \
    && mkdir -p /var/lib/kollate /etc/kollate \
    && chown kollate /var/lib/kollate
COPY --from=build /src/target/release/kollate /usr/local/bin/kollate
COPY config /etc/kollate
COPY examples /usr/share/kollate/examples
WORKDIR /usr/share/kollate
USER kollate
ENV KOLLATE_DATA_DIR=/var/lib/kollate KOLLATE_OUT=/var/lib/kollate/out
ENTRYPOINT ["kollate"]
CMD ["run", "--config", "/etc/kollate/kollate.toml"]
