# syntax=docker/dockerfile:1.7
#
# One file, two variants (see docs/deployment.md):
#   docker build --target cpu  -t vitrine:cpu  .   # CPU-only torch from the PyTorch CPU index (small image)
#   docker build --target cuda -t vitrine:cuda .   # CUDA torch from PyPI (its CUDA libraries come as wheels;
#                                                  # the host needs the NVIDIA driver + container toolkit)
# Docker cannot run on the machines this project is developed on: this file is kept correct by reading the
# Docker and PyTorch documentation, and `docker compose config` checks the compose files.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build stages: a virtualenv in /opt/venv
FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY common ./common
COPY embed ./embed
COPY store ./store
COPY indexer ./indexer
COPY search ./search
COPY rerank ./rerank
COPY generate ./generate
COPY train ./train
COPY api ./api

FROM build-base AS build-cpu
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install -c constraints.txt .

FROM build-base AS build-cuda
# faiss-cpu (a base dependency) and faiss-gpu (the gpu extra) both install the `faiss` package: drop the CPU
# one, then lay faiss-gpu's files again (the uninstall removed the files the two share). The GPU image also
# carries diffusers (the generate extra) for variant generation with SDXL or FLUX (docs/generate.md).
RUN pip install -c constraints.txt '.[gpu,generate]' \
 && pip uninstall -y faiss-cpu \
 && pip install --force-reinstall --no-deps 'faiss-gpu>=1.14.3,<2'

# ---------------------------------------------------------------- runtime stages
FROM ${PYTHON_IMAGE} AS runtime-base
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    VITRINE_HOME=/var/lib/vitrine VITRINE_API__HOST=0.0.0.0 VITRINE_API__PORT=8000 \
    HF_HOME=/models/huggingface VITRINE_DEMO_MODEL=/app/data/demo_model VITRINE_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 vitrine \
 && mkdir -p /var/lib/vitrine /models /app \
 && chown -R vitrine:vitrine /var/lib/vitrine /models
WORKDIR /app
COPY data ./data
USER vitrine
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=6 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
CMD ["vitrine", "serve"]

FROM runtime-base AS cpu
COPY --from=build-cpu /opt/venv /opt/venv

FROM runtime-base AS cuda
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility VITRINE_EMBED__DEVICE=cuda \
    VITRINE_EMBED__DTYPE=fp16
COPY --from=build-cuda /opt/venv /opt/venv
