# `qzhou serve` in a container. The server is stateless: scale out by running more replicas
# behind any HTTP load balancer (README "Serving").
#
#   docker build -t qzhou .                                   # CPU only (Burn's Flex backend)
#   docker build -t qzhou --build-arg FEATURES=wgpu .         # + Vulkan through wgpu
#   docker run -p 8080:8080 -v /path/to/model:/model qzhou    # then POST /v1/embeddings
#   docker run -p 8080:8080 -e QZHOU_API_KEY=... -v /path/to/model:/model qzhou
#
# Any `qzhou serve` flag can follow the image name (they replace CMD):
#   docker run ... qzhou serve --model /model --host 0.0.0.0 --max-queue 256 --auto-truncate
# Hub ids work too (`--model Kingsoft-LLM/QZhou-Embedding`); mount a volume at /hf-cache to keep
# downloads. CUDA images need an nvidia/cuda base with the driver libraries and
# FEATURES=cuda; not covered here.

ARG RUST_VERSION=1.92
FROM rust:${RUST_VERSION}-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p qzhou-cli --bin qzhou --no-default-features \
        ${FEATURES:+--features "$FEATURES"} \
    && cp target/release/qzhou /usr/local/bin/qzhou

FROM debian:bookworm-slim
ARG FEATURES=""
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
        $( [ "$FEATURES" = wgpu ] && echo libvulkan1 mesa-vulkan-drivers ) \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent qzhou
COPY --from=build /usr/local/bin/qzhou /usr/local/bin/qzhou
USER qzhou
ENV HF_HOME=/hf-cache
EXPOSE 8080
# SIGTERM drains requests in flight, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["qzhou"]
CMD ["serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8080"]
