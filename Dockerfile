# One image for every cardpipe process; compose picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml constraints.txt ./
COPY cardpipe ./cardpipe
COPY models ./models
COPY wechat ./wechat
COPY workers ./workers
COPY migrations ./migrations
COPY api.py scheduler.py ./
RUN pip install -c constraints.txt . && useradd --system --uid 10001 cardpipe
USER cardpipe

ENTRYPOINT ["cardpipe"]
CMD ["--help"]
