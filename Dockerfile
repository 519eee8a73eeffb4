# The one edgecache image: controller, agent and hub are commands of it
# (`edgecache controller|agent|hub`; the manifests set `command`).
#
# Runs as the non-root user 65532 by default: the controller and the hub need nothing more. The
# agent's DaemonSet runs it as root, privileged, because its CSI NodePublishVolume bind-mounts
# views into kubelet's pod directories (Bidirectional mount propagation); the hub as a static
# pod runs as root to read the kubelet's kubeconfig.
#
# Build: docker build -t edgecache/edgecache:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgecache ./edgecache
COPY plugins ./plugins
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[controller,agent]" ./plugins/edgecache-s3 ./plugins/edgecache-oss

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "edgecache[controller,agent]" edgecache-s3 edgecache-oss \
    && rm -rf /wheels \
    && useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent edgecache
USER 65532:65532
# 10261: hub API proxy; 10267: hub health/metrics; 10268: controller health/metrics;
# 10269: agent health/metrics.
EXPOSE 10261 10267 10268 10269 10270
ENTRYPOINT ["edgecache"]
CMD ["--help"]
