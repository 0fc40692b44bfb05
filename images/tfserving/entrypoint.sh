#!/bin/sh
# Start tensorflow_model_server with kubeserve's defaults; extra arguments are appended, and
# TF Serving lets a later flag override an earlier one.
# `exec` replaces this shell, so tini's SIGTERM reaches the server itself.
set -eu
exec /usr/bin/tensorflow_model_server \
    --port="${GRPC_PORT:-8500}" \
    --rest_api_port="${REST_API_PORT:-8501}" \
    --model_name="${MODEL_NAME:-model}" \
    --model_base_path="${MODEL_BASE_PATH:-/mnt/models}" \
    --monitoring_config_file=/etc/kubeserve/monitoring_config.txt \
    "$@"
