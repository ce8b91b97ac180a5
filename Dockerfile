# The proxy image: optillm under gunicorn (gthread), in front of any OpenAI-compatible upstream.
#   docker build -t optillm .
#   docker run -p 8000:8000 -e OPTILLM_BASE_URL=https://api.openai.com/v1 \
#       -e OPENAI_API_KEY=sk-... optillm
# The embedded local model is not in this image (it needs the 'local' extra); set
# OPTILLM_BASE_URL (or the AZURE_* variables) to an upstream.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    OPTILLM_HOST=0.0.0.0 OPTILLM_PORT=8000
WORKDIR /app
COPY requirements_proxy_only.txt .
RUN pip install -r requirements_proxy_only.txt
COPY pyproject.toml README.md ./
COPY optillm ./optillm
RUN pip install --no-deps . && useradd --create-home optillm
USER optillm
EXPOSE 8000
CMD ["gunicorn", "--workers", "2", "--worker-class", "gthread", "--threads", "16", \
     "--bind", "0.0.0.0:8000", "--timeout", "630", "optillm.app:create_app()"]
