# Mercurio: `docker build -t mercurio .`, then `docker run -p 8000:8000 -e MERCURIO_AUTH_PK_TEXT=… mercurio`.

# -- build: install the package and its drivers into a virtual environment -------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mercurio
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mercurio ./mercurio
RUN /opt/mercurio/bin/pip install ".[postgres,rabbitmq,redis]"

# -- run: the slim base, the virtual environment, an unprivileged user -----------------------
FROM python:3.11-slim
ENV PATH=/opt/mercurio/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MERCURIO_ENV=production \
    MERCURIO_HTTP_PORT=8000 \
    MERCURIO_DB_CONN=sqlite:////data/mercurio.db
RUN groupadd --system --gid 10001 mercurio \
    && useradd --system --uid 10001 --gid mercurio --home-dir /data --create-home mercurio
COPY --from=build /opt/mercurio /opt/mercurio
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# /healthz answers while the process is alive; TLS is used when a certificate is configured.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as u; tls = bool(os.environ.get('MERCURIO_SSL_CERTFILE')); u.urlopen(('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('MERCURIO_HTTP_PORT', '8000') + '/healthz', timeout=2, context=ssl._create_unverified_context() if tls else None)"]
# SIGTERM: stop taking streams, finish publishes, send every stream a retry hint, exit 0
# within MERCURIO_SHUTDOWN_GRACE (default 10 s; give `docker stop -t` / stop_grace_period more).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mercurio", "serve", "--host", "0.0.0.0"]
