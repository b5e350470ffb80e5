# The guarded proxy: `docker build -t ccguard-proxy .` then
#   docker run -p 8000:8000 -v $PWD/runs/cbrn/guard:/guard:ro -e CCGUARD_API_KEYS=key1,key2 \
#     -e OPENAI_API_KEY=... ccguard-proxy --upstream https://api.openai.com/v1
# The container binds beyond loopback, so clients need one of the keys in CCGUARD_API_KEYS (comma-separated); the
# proxy refuses to start without them. The guard is mounted read-only; nothing is downloaded at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# The CPU build of torch first: a plain requirement would pull a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.6,<3"

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install ".[server,fast]" && rm -rf /src

RUN useradd --system --uid 10001 ccguard
USER ccguard
WORKDIR /home/ccguard
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["ccguard", "serve", "--guard", "/guard", "--host", "0.0.0.0", "--port", "8000", "--api-keys", "CCGUARD_API_KEYS"]
CMD ["--upstream", "https://api.openai.com/v1"]
