# Builds the workflowops binary; migrations are compiled into it.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin workflowops

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data workflowops && mkdir -p /data && chown workflowops /data
COPY --from=build /src/target/release/workflowops /usr/local/bin/workflowops
USER workflowops
WORKDIR /data
ENV WORKFLOWOPS_LISTEN=0.0.0.0:8080 WORKFLOWOPS_DATA_DIR=/data
EXPOSE 8080
ENTRYPOINT ["workflowops"]
CMD ["serve"]
