#!/bin/sh
# Fill in the upstream and the DNS resolver, then run nginx in the foreground.
set -eu
UPSTREAM=${FEDFLEET_GATEWAY_UPSTREAM:-server:8000}   # the SuperLink
LISTEN=${FEDFLEET_GATEWAY_LISTEN:-8000}               # [address:]port for devices
UPSTREAM_HOST=${UPSTREAM%:*}
# The name checked in the SuperLink's certificate. nginx matches DNS names only, so an
# IPv4 upstream (e.g. 127.0.0.1:8001 with --network host) is checked as "localhost".
UPSTREAM_NAME=${FEDFLEET_GATEWAY_UPSTREAM_NAME:-}
if [ -z "$UPSTREAM_NAME" ]; then
    case "$UPSTREAM_HOST" in
        *[!0-9.]*) UPSTREAM_NAME=$UPSTREAM_HOST ;;
        *) UPSTREAM_NAME=localhost ;;
    esac
fi
RESOLVER=$(awk '/^nameserver/ { print $2; exit }' /etc/resolv.conf)
sed -e "s|@UPSTREAM@|$UPSTREAM|g" -e "s|@LISTEN@|$LISTEN|g" \
    -e "s|@UPSTREAM_NAME@|$UPSTREAM_NAME|g" \
    -e "s|@RESOLVER@|${RESOLVER:-127.0.0.11}|g" \
    /etc/fedfleet/nginx.conf.in > /tmp/nginx.conf
exec nginx -c /tmp/nginx.conf -g 'daemon off;'
