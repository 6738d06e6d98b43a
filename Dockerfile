FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY citywatch citywatch
COPY ingest ingest
COPY alerts alerts
COPY api api
COPY simulators simulators
# Not devtools/ (bench, demo, server launchers): a developer tool of the checkout, not installed.
# uid 10001: docker-compose's influxdb-init gives citywatch's token file to this uid.
RUN pip install --no-cache-dir . && useradd --system --uid 10001 --home /var/lib/citywatch citywatch \
    && mkdir -p /var/lib/citywatch && chown citywatch /var/lib/citywatch
USER citywatch
ENV CW_DATA_DIR=/var/lib/citywatch CW_API_HOST=0.0.0.0
VOLUME /var/lib/citywatch
EXPOSE 8000 9212
ENTRYPOINT ["citywatch"]
CMD ["run"]
