FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY avgen ./avgen
COPY workers ./workers
COPY api ./api
COPY eval ./eval
RUN pip install --no-cache-dir .
