# syntax=docker/dockerfile:1
# docdesk's service image: `docdesk serve` on port 8000, as a user without
# privileges, with the PostgreSQL, S3 and metrics extras. deploy/compose.yaml
# runs it; README.md, "Deployment: several instances", says how.

FROM python:3.11-slim AS wheels
WORKDIR /src
# .dockerignore lets in only these: the package and what its metadata reads.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgresql,s3,metrics]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are mounted for the install only, so no layer keeps them.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
        "docdesk[postgresql,s3,metrics]"

RUN useradd --system --uid 10001 --user-group --create-home \
        --home-dir /var/lib/docdesk --shell /usr/sbin/nologin docdesk
USER docdesk
WORKDIR /var/lib/docdesk
# The embedded defaults' place: with PostgreSQL and S3 nothing is kept in it.
ENV DOCDESK_DATA_DIR=/var/lib/docdesk

EXPOSE 8000
CMD ["docdesk", "serve", "--host", "0.0.0.0", "--port", "8000"]
