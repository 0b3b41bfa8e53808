#!/bin/sh
# Fill in the upstream and the DNS resolver, then run nginx in the foreground.
set -eu
UPSTREAM=${FEDFLEET_GATEWAY_UPSTREAM:-server:8000}
UPSTREAM_HOST=${UPSTREAM%:*}
RESOLVER=$(awk '/^nameserver/ { print $2; exit }' /etc/resolv.conf)
sed -e "s|@UPSTREAM@|$UPSTREAM|g" -e "s|@UPSTREAM_HOST@|$UPSTREAM_HOST|g" \
    -e "s|@RESOLVER@|${RESOLVER:-127.0.0.11}|g" \
    /etc/fedfleet/nginx.conf.in > /tmp/nginx.conf
exec nginx -c /tmp/nginx.conf -g 'daemon off;'
