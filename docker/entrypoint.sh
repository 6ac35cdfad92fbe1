#!/bin/sh
# The container's entrypoint: checks the data folder, then runs `ats` as the process itself (exec),
# so SIGTERM from `docker stop` reaches the node, which shuts down cleanly (in-flight requests get
# shutdown_timeout_ms, the database is closed).
#
#   ats-entrypoint               -> ats node            (the default CMD)
#   ats-entrypoint node ...      -> ats node ...
#   ats-entrypoint backup /data/backups/x.sqlite -> ats backup ... (any other ats command)
#
# Environment: ATS_DATA_DIR (default /data, the image's volume) and every ATS_* setting
# (docs/api.md); ATS_NODE_KEY_FILE / ATS_DASHBOARD_TOKEN_FILE for secrets mounted by the runtime.
set -eu

: "${ATS_DATA_DIR:=/data}"
export ATS_DATA_DIR

if [ ! -d "$ATS_DATA_DIR" ]; then
    mkdir -p "$ATS_DATA_DIR" 2>/dev/null || {
        echo "ats-entrypoint: cannot create the data folder $ATS_DATA_DIR as uid $(id -u)" >&2
        exit 2
    }
fi
if [ ! -w "$ATS_DATA_DIR" ]; then
    echo "ats-entrypoint: the data folder $ATS_DATA_DIR is not writable by uid $(id -u);" \
         "give the volume to that user (chown $(id -u) on the host, or a named volume)" >&2
    exit 2
fi

if [ "$#" -eq 0 ]; then
    set -- node
fi
case "$1" in
    node|backup|restore|verify-db|keygen|submit|checkpoint|audit|peers|balance|report)
        exec ats "$@" ;;
    *)
        exec "$@" ;;
esac
