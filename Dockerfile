# The project's services: one image, the `lustrax` CLI as entry point (see docker-compose.yml).
# The page's player, hls.js, from the npm registry at the locked version (package-lock.json).
FROM node:20-slim AS page
WORKDIR /page
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

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
COPY catalog ./catalog
COPY --from=page /page/node_modules/hls.js/dist/hls.min.js ./producers/static/vendor/hls.min.js
RUN pip install --no-cache-dir . && mkdir -p /var/lib/lustrax && chown lustrax /var/lib/lustrax
USER lustrax
ENTRYPOINT ["lustrax"]
