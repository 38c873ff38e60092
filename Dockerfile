# One image for web, workers, beat and flower. GPU hosts build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VAR_DIR=/var/lib/tandem
WORKDIR /app
RUN pip install --no-cache-dir "torch>=2.13,<2.14" --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY config config
COPY annotate annotate
COPY training training
COPY manage.py ./
RUN pip install --no-cache-dir . flower \
    && DEBUG=1 python manage.py collectstatic --noinput
RUN useradd --create-home tandem && mkdir -p /var/lib/tandem && chown tandem /var/lib/tandem
USER tandem
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4"]
