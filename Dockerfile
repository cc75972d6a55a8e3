# restyle as a SageMaker bring-your-own-container image: `docker run IMAGE serve` serves the model that
# SageMaker extracts to /opt/ml/model on port 8080 with restyle's own /ping, /invocations and /v1.
#   docker build -t restyle .
#   docker run --gpus all -p 8080:8080 -v "$PWD/model:/opt/ml/model:ro" restyle serve
# The PyPI torch wheel brings its CUDA libraries; the GPU driver comes from the host (nvidia runtime).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1

WORKDIR /opt/restyle
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf /root/.cache

EXPOSE 8080
ENTRYPOINT ["python", "-m", "restyle.serve.container"]
CMD ["serve"]
