#!/bin/sh
# Start tensorflow_model_server. A full command line (the operator's: it names
# --model_base_path) is used as it is; otherwise kubeserve's defaults come first and extra
# arguments are appended.
# `exec` replaces this shell, so tini's SIGTERM reaches the server itself.
set -eu
case " $* " in
    *" --model_base_path="*)
        # The operator passes a complete command line: no defaults to repeat.
        exec /usr/bin/tensorflow_model_server "$@" ;;
esac
exec /usr/bin/tensorflow_model_server \
    --port="${GRPC_PORT:-8500}" \
    --rest_api_port="${REST_API_PORT:-8501}" \
    --model_name="${MODEL_NAME:-model}" \
    --model_base_path="${MODEL_BASE_PATH:-/mnt/models}" \
    --monitoring_config_file=/etc/kubeserve/monitoring_config.txt \
    "$@"
