# The router with its embedded defaults; mount a config and data volume to run it for real:
#   docker run -p 11112:11112 -v $PWD/site:/site -e ROUTER_CONFIG=/site/router.yaml dicom-hl7-router
# DICOMweb listens on loopback unless the config sets http.host (which then needs http.auth).
# Without a configuration the data goes to /app/var and the rules are read from /app/rules (the working folder).
FROM python:3.11-slim-bookworm
WORKDIR /build
COPY pyproject.toml README.md ./
COPY router ./router
COPY plugins ./plugins
RUN python3 -m pip install --no-cache-dir . && rm -rf /build
WORKDIR /app
COPY rules ./rules
RUN useradd --system --home /app router && mkdir var && chown router var
USER router
EXPOSE 11112 2575 8080
VOLUME ["/app/var"]
CMD ["router", "serve"]
