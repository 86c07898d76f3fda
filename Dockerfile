# The avgen image: the package with its weights and the `avgen` and `ray` commands, for every service of
# docker-compose.yml (Ray head, Ray workers, the API) and for `docker run` on its own (README "Growing past one
# machine"). One image for CPU and GPU hosts: PyPI's torch wheel is the CUDA build, which runs on a CPU too (and
# the torchaudio wheels need it: pyproject.toml); on a GPU host the NVIDIA container toolkit brings the driver.
FROM python:3.11-slim

# No system packages: PyAV (FFmpeg), soundfile (libsndfile), opencv-python-headless, ai-edge-litert and torch carry
# their native libraries in their wheels, and need only what the base image has (glibc, libstdc++, zlib).
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

WORKDIR /app

# The dependencies first, in a layer of their own (torch is gigabytes): it is rebuilt only when pyproject.toml
# changes, not for every change of the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package with its package data: avgen/weights/tiny.safetensors (the model), avgen/face_models,
# eval/weights (the learned lip-sync scorer), installed into site-packages; the sources go. The build fails if
# the weights did not make it into the installed package.
COPY README.md ./
COPY avgen ./avgen
COPY workers ./workers
COPY api ./api
COPY eval ./eval
RUN pip install --no-deps . \
    && cd / && rm -rf /app \
    && python -c "from avgen.checkpoint import default_checkpoint; assert default_checkpoint(), 'no model weights'" \
    && python -c "from eval.learned import WEIGHTS; assert WEIGHTS.is_file(), 'no scorer weights'" \
    && avgen --help > /dev/null

# A user that is not root; /data (the API's data dir, a volume in docker-compose.yml) belongs to it, and a new
# named volume mounted there takes that owner.
RUN useradd --create-home --uid 1000 avgen && mkdir /data && chown avgen /data
USER avgen
WORKDIR /home/avgen

EXPOSE 8000
# On its own: the API and a local Ray of its own (docker run -e AVGEN_API_KEYS=... -p 8000:8000 avgen).
CMD ["avgen", "serve", "--host", "0.0.0.0", "--data-dir", "/data"]
