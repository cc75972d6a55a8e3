"""The HTTP server (FastAPI): the SageMaker contract plus restyle's /v1 API, and the shared handler."""
