# One image for web, workers, beat and flower. GPU hosts build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim AS app
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VAR_DIR=/var/lib/tandem
WORKDIR /app
RUN pip install --no-cache-dir "torch>=2.13,<2.14" --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY config config
COPY annotate annotate
COPY training training
COPY web web
COPY manage.py ./
RUN pip install --no-cache-dir . flower \
    && SECRET_KEY=schema-only python manage.py spectacular --file /app/openapi.yaml

# The web UI: its API client is typed from the schema the app stage just wrote.
FROM node:20-slim AS frontend
WORKDIR /frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/index.html frontend/vite.config.ts frontend/tsconfig.json ./
COPY frontend/src src
COPY --from=app /app/openapi.yaml ./openapi.yaml
RUN npm run gen:api && npm run build

FROM app
COPY --from=frontend /frontend/dist frontend/dist
RUN DEBUG=1 python manage.py collectstatic --noinput
RUN useradd --create-home tandem && mkdir -p /var/lib/tandem && chown tandem /var/lib/tandem
USER tandem
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4"]
