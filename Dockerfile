# The project's services: one image, the `lustrax` CLI as entry point (see docker-compose.yml).
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 lustrax
WORKDIR /app
COPY pyproject.toml README.md ./
COPY common ./common
COPY lustrax ./lustrax
COPY schemas ./schemas
COPY producers ./producers
COPY processors ./processors
COPY gateways ./gateways
COPY infra ./infra
RUN pip install --no-cache-dir . && mkdir -p /var/lib/lustrax && chown lustrax /var/lib/lustrax
USER lustrax
ENTRYPOINT ["lustrax"]
