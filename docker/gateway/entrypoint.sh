#!/bin/sh
# Fill in nginx.conf.in from FEDFLEET_GATEWAY_* variables and run nginx; while it runs,
# re-resolve the SuperLink's name every FEDFLEET_GATEWAY_RESOLVE_EVERY seconds and
# reload nginx when it changes (a recreated server container gets a new address, and
# nginx's upstream block, which keeps connections to the SuperLink alive, resolves
# names only when the configuration is loaded).
#
# The defaults below are the gateway's only ones: the image and compose.yaml set none
# of the limits (compose passes them on only when they are set in the shell), and
# README's table quotes them (tests/test_gateway_defaults.py keeps it so).
set -eu

UPSTREAM=${FEDFLEET_GATEWAY_UPSTREAM:-server:8000}     # the SuperLink, host:port
LISTEN=${FEDFLEET_GATEWAY_LISTEN:-8000}                 # [address:]port for devices
CONNECTIONS=${FEDFLEET_GATEWAY_CONNECTIONS_PER_ADDRESS:-32}
RATE=${FEDFLEET_GATEWAY_RATE_PER_ADDRESS:-50}           # requests per second
BURST=${FEDFLEET_GATEWAY_BURST_PER_ADDRESS:-1000}       # requests served at once
MAX_BODY=${FEDFLEET_GATEWAY_MAX_BODY:-6m}               # push-object body limit
RESOLVE_EVERY=${FEDFLEET_GATEWAY_RESOLVE_EVERY:-5}      # seconds
UPSTREAM_KEEPALIVE=${FEDFLEET_GATEWAY_UPSTREAM_KEEPALIVE:-16}  # idle connections to the SuperLink
POLL_RATE=${FEDFLEET_GATEWAY_POLL_RATE_PER_DEVICE:-2}    # polls + heartbeats per second
POLL_BURST=${FEDFLEET_GATEWAY_POLL_BURST_PER_DEVICE:-20}
CONF=/tmp/nginx.conf

fail() { echo "fedfleet-gateway: $*" >&2; exit 2; }
check() {  # NAME VALUE REGEX HINT
    echo "$2" | grep -Eqx "$3" || fail "$1='$2' is not valid: $4"
}
check FEDFLEET_GATEWAY_UPSTREAM "$UPSTREAM" '[A-Za-z0-9._-]+:[0-9]{1,5}|\[[0-9a-fA-F:.]+\]:[0-9]{1,5}' \
    "give host:port, e.g. server:8000"
check FEDFLEET_GATEWAY_LISTEN "$LISTEN" '([0-9.]+:|\[[0-9a-fA-F:.]+\]:)?[0-9]{1,5}' \
    "give [address:]port, e.g. 8000 or 0.0.0.0:8000"
check FEDFLEET_GATEWAY_CONNECTIONS_PER_ADDRESS "$CONNECTIONS" '[1-9][0-9]{0,5}' \
    "give a whole number of connections, e.g. 32"
check FEDFLEET_GATEWAY_RATE_PER_ADDRESS "$RATE" '[1-9][0-9]{0,5}' \
    "give a whole number of requests per second, e.g. 50"
check FEDFLEET_GATEWAY_BURST_PER_ADDRESS "$BURST" '[0-9]{1,6}' \
    "give a whole number of requests, e.g. 1000"
check FEDFLEET_GATEWAY_MAX_BODY "$MAX_BODY" '[1-9][0-9]{0,9}[kKmM]?' \
    "give a size in nginx syntax, e.g. 6m"
check FEDFLEET_GATEWAY_RESOLVE_EVERY "$RESOLVE_EVERY" '[1-9][0-9]{0,4}' \
    "give whole seconds, e.g. 5"
check FEDFLEET_GATEWAY_POLL_RATE_PER_DEVICE "$POLL_RATE" '[1-9][0-9]{0,4}' \
    "give a whole number of requests per second, e.g. 2"
check FEDFLEET_GATEWAY_POLL_BURST_PER_DEVICE "$POLL_BURST" '[0-9]{1,5}' \
    "give a whole number of requests, e.g. 20"
check FEDFLEET_GATEWAY_UPSTREAM_KEEPALIVE "$UPSTREAM_KEEPALIVE" '[1-9][0-9]{0,3}' \
    "give a whole number of connections, e.g. 16"

UPSTREAM_HOST=${UPSTREAM%:*}
UPSTREAM_PORT=${UPSTREAM##*:}
# The name checked in the SuperLink's certificate and sent as Host. nginx matches DNS
# names only, so an IP upstream (e.g. 127.0.0.1:8001 with --network host) is checked
# as "localhost".
UPSTREAM_NAME=${FEDFLEET_GATEWAY_UPSTREAM_NAME:-}
case "$UPSTREAM_HOST" in
    \[*) IS_NAME=0 ;;          # [IPv6]
    *[!0-9.]*) IS_NAME=1 ;;    # a DNS name
    *) IS_NAME=0 ;;            # IPv4
esac
if [ -z "$UPSTREAM_NAME" ]; then
    if [ "$IS_NAME" = 1 ]; then UPSTREAM_NAME=$UPSTREAM_HOST; else UPSTREAM_NAME=localhost; fi
fi
check FEDFLEET_GATEWAY_UPSTREAM_NAME "$UPSTREAM_NAME" '[A-Za-z0-9._-]+' \
    "give the DNS name in the SuperLink's certificate"

# The upstream's address now: an IP upstream as it is; a name resolved (IPv4).
resolve() {
    if [ "$IS_NAME" = 0 ]; then echo "$UPSTREAM_HOST"; return; fi
    getent ahostsv4 "$UPSTREAM_HOST" 2>/dev/null | awk '{ print $1 }' | sort -u | head -n 1
}

render() {  # ADDRESS
    sed -e "s|@UPSTREAM_ADDRESS@|$1:$UPSTREAM_PORT|g" -e "s|@LISTEN@|$LISTEN|g" \
        -e "s|@UPSTREAM_NAME@|$UPSTREAM_NAME|g" -e "s|@CONNECTIONS@|$CONNECTIONS|g" \
        -e "s|@RATE@|$RATE|g" -e "s|@BURST@|$BURST|g" -e "s|@MAX_BODY@|$MAX_BODY|g" \
        -e "s|@UPSTREAM_KEEPALIVE@|$UPSTREAM_KEEPALIVE|g" \
        -e "s|@POLL_RATE@|$POLL_RATE|g" -e "s|@POLL_BURST@|$POLL_BURST|g" \
        /etc/fedfleet/nginx.conf.in > "$CONF.new"
    mv "$CONF.new" "$CONF"
}

ADDRESS=$(resolve)
WAITED=0
while [ -z "$ADDRESS" ]; do  # the server container is not up (yet): wait for it
    if [ $((WAITED % 10)) = 0 ]; then
        echo "fedfleet-gateway: waiting for $UPSTREAM_HOST to resolve" >&2
    fi
    sleep 1
    WAITED=$((WAITED + 1))
    ADDRESS=$(resolve)
done
render "$ADDRESS"
rm -f /tmp/fedfleet-gateway.sock  # left behind if nginx was killed
echo "fedfleet-gateway: devices on $LISTEN, SuperLink at $UPSTREAM ($ADDRESS); per address:" \
     "$CONNECTIONS connections, $RATE requests/s (burst $BURST); per device: $POLL_RATE" \
     "polls and heartbeats/s (burst $POLL_BURST)" >&2

nginx -e stderr -c "$CONF" -g 'daemon off;' &
NGINX=$!
trap 'kill -QUIT "$NGINX" 2>/dev/null; wait "$NGINX"; exit 0' TERM INT QUIT

while kill -0 "$NGINX" 2>/dev/null; do
    sleep "$RESOLVE_EVERY" &
    wait $! || true
    NOW=$(resolve)
    if [ -n "$NOW" ] && [ "$NOW" != "$ADDRESS" ]; then
        render "$NOW"
        if nginx -e stderr -c "$CONF" -t -q && kill -HUP "$NGINX"; then
            echo "fedfleet-gateway: $UPSTREAM_HOST moved from $ADDRESS to $NOW; reloaded" >&2
            ADDRESS=$NOW
        fi
    fi
done
wait "$NGINX"
