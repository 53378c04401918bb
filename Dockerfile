# The streamrec image for docker-compose: one image, one process per service (worker, api, trainer).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY services services
COPY streams streams
COPY model model
COPY infra infra
# the versions `make setup` installs: the ranges alone resolve other releases each build
RUN pip install --no-cache-dir -c constraints.txt -e '.[cpu]'
ENV STREAMREC_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["streamrec"]
