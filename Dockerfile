# sppdet in a container: `docker build -t sppdet .` then
# `docker run --rm -v $PWD/data:/data sppdet detect /data/image.jpg --json /data/out.json`.
# Backbone weights are downloaded by torchvision into TORCH_HOME on first use;
# mount a volume there to keep them between runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_HOME=/cache/torch \
    MPLBACKEND=Agg

# OpenCV headless needs only glib from the system.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sppdet
COPY pyproject.toml README.md ./
COPY sppdet ./sppdet
COPY proposals ./proposals
# CPU wheels of torch keep the image small; the package's own ranges admit them.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.14.1" "torchvision==0.29.1" \
    && pip install ".[demo]" \
    && python -c "import importlib.metadata as m; bad = sorted({d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].lower().startswith('opencv') and 'headless' not in d.metadata['Name'].lower()}); assert not bad, f'two cv2 distributions: {bad}'"

WORKDIR /work
ENTRYPOINT ["sppdet"]
CMD ["--help"]
