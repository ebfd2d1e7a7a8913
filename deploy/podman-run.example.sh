#!/usr/bin/env bash
# Run the reconciler image with podman on an EL9 compose host (deploy/README.md).
#
#   podman build -f deploy/Containerfile -t localhost/sig-reconciler:0.1.0 .
#   deploy/podman-run.example.sh                    # the loop: `reconciler run`
#   deploy/podman-run.example.sh plan               # any other command, once
#   deploy/podman-run.example.sh apply --yes
#
# An example: read it, set the variables below, then run it as root (rootful
# podman, so that --user maps to the same uid on the host). The host side:
#   - /etc/reconciler/config.yaml (deploy/config.example.yaml), readable by
#     uid 990; inside the container set metrics.listen to "0.0.0.0:9090" if
#     the port below should be reachable;
#   - the three roots, on one file system under one directory (TREES, /mnt), and
#     the state directory, owned by uid/gid 990:
#       install -d -o 990 -g 990 -m 0755 /mnt/compose /mnt/repos-staging /mnt/repos-production
#       install -d -o 990 -g 990 -m 0750 /var/lib/reconciler
#
# SELinux: ":Z" relabels a volume for this container alone. That is right for
# the state and the config. For the trees it is right only when nothing else
# on this host reads them: a web or rsync server serving /mnt/repos-* can no
# longer read a tree relabeled ":Z" (nor ":z"). Then set SHARED_TREES=1: the
# trees keep their labels and the container runs without SELinux separation
# (--security-opt label=disable); the other restrictions below still apply.
#
# Hardlinks: each volume is its own mount, and link(2) never crosses mounts. So
# the three roots are one volume (TREES, mounted at /mnt): packages are
# hardlinked from the compose root into staging and production, as under the
# systemd unit (deploy/README.md). The config's `roots:` are under /mnt.
set -euo pipefail

IMAGE=${IMAGE:-localhost/sig-reconciler:0.1.0}
NAME=${NAME:-reconciler}
RUN_AS=${RUN_AS:-990:990}
CONFIG_DIR=${CONFIG_DIR:-/etc/reconciler}
STATE_DIR=${STATE_DIR:-/var/lib/reconciler}
TREES=${TREES:-/mnt}
METRICS_PORT=${METRICS_PORT:-127.0.0.1:9090:9090}
SHARED_TREES=${SHARED_TREES:-0}

if [[ $SHARED_TREES == 1 ]]; then
    tree_label="" security=(--security-opt label=disable)
else
    tree_label=":Z" security=()
fi

# The loop runs detached under a name; any other command runs once, attached.
if [[ $# -eq 0 || $1 == run ]]; then
    mode=(--detach --name "$NAME" --replace --publish "$METRICS_PORT")
else
    mode=(--rm --interactive)
    [[ -t 0 ]] && mode+=(--tty)
fi

args=(
    "${mode[@]}"
    --user "$RUN_AS"
    --read-only
    --tmpfs /tmp:rw,nosuid,nodev,size=1g
    # a tiny init as PID 1: forwards SIGTERM, reaps git's and ssh's children
    --init
    # `podman stop` waits this long for the current action to finish
    --stop-timeout 1800
    --cap-drop all
    --security-opt no-new-privileges
    "${security[@]}"
    --volume "$CONFIG_DIR:/etc/reconciler:ro,Z"
    --volume "$STATE_DIR:/var/lib/reconciler:Z"
    --volume "$TREES:/mnt$tree_label"
    "$IMAGE"
)
exec podman run "${args[@]}" "${@:-run}"
