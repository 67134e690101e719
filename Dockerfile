# One image for the producer, the consumer and the DLQ inspector; the command picks the service
# (calc-producer, calc-consumer, dlq-inspector). docker-compose.yml and k8s/ set it per service.

FROM python:3.13-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# A venv without pip of its own: the build stage's pip fills it, the runtime image only copies it.
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
# Dependencies first, read from pyproject.toml alone (where they are pinned): changing the code
# reuses this layer, so a rebuild only reinstalls the project itself.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >/tmp/requirements.txt \
    && pip --python /opt/venv/bin/python install --requirement /tmp/requirements.txt
COPY README.md ./
COPY calculator ./calculator
COPY messaging ./messaging
COPY producer ./producer
COPY consumer ./consumer
COPY dlq_inspector ./dlq_inspector
COPY journal ./journal
COPY gen ./gen
RUN pip --python /opt/venv/bin/python install --no-deps . \
    && /opt/venv/bin/calc-producer --help >/dev/null \
    && /opt/venv/bin/calc-consumer --help >/dev/null \
    && /opt/venv/bin/calc-journal --help >/dev/null

FROM python:3.13-slim
LABEL org.opencontainers.image.title="calc-events" \
      org.opencontainers.image.description="Protobuf events over RabbitMQ: producer, consumer, DLQ inspector"
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 calc \
    && useradd --system --uid 10001 --gid calc --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin calc
COPY --from=build /opt/venv /opt/venv
# Bytecode was compiled at install; the root filesystem may be read-only at run time.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
CMD ["calc-consumer"]
