# The mythline image for Kubernetes CronJobs (see docs/many-hosts.md). Holds no secret: the
# API key and the state DSN come from a Secret at run time, the config from a ConfigMap.
#   docker build -t mythline:0.1.0 .
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mythline_cli ./mythline_cli
# tzdata: zoneinfo's database whatever the base image ships, for budget.timezone.
RUN python -m venv /opt/mythline/venv \
    && /opt/mythline/venv/bin/pip install . tzdata==2026.6
# tiktoken's vocabulary, fetched once here: a pod starts empty and must not download it on
# every run (mythline counts characters instead when the file is missing). DL3064 reads
# "TOKEN" in the variable's name; it holds a folder.
# hadolint ignore=DL3064
ENV TIKTOKEN_CACHE_DIR=/opt/mythline/tiktoken
RUN /opt/mythline/venv/bin/python -c "import tiktoken; tiktoken.get_encoding('o200k_base')"

FROM python:3.11-slim-bookworm

# The numeric id the manifests' securityContext names (runAsUser: 10001).
RUN groupadd --system --gid 10001 mythline \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mythline --create-home \
       --shell /usr/sbin/nologin mythline
COPY --from=build /opt/mythline /opt/mythline
# hadolint ignore=DL3064
ENV PATH=/opt/mythline/venv/bin:$PATH \
    TIKTOKEN_CACHE_DIR=/opt/mythline/tiktoken \
    MYTHLINE_HOME=/var/lib/mythline \
    HOME=/var/lib/mythline \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/mythline
ENTRYPOINT ["mythline"]
CMD ["--help"]
