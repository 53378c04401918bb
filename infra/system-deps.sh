#!/usr/bin/env bash
# Installs the system packages the local stack needs, when they are missing: redis-server
# (Debian's package), Java 17+ and Maven; with the argument "browser", chromium too (only
# `make test` needs it, for the dashboard's browser test). Skips what an external service
# makes unnecessary, except for `make test`: its secured-stack tests always run the
# embedded services, whatever the environment points at.
set -euo pipefail

need=()
testing=$([[ "${1:-}" == browser ]] && echo 1 || true)
if [[ -n "$testing" || -z "${STREAMREC_REDIS_URL:-}" ]] && ! command -v redis-server >/dev/null; then
  need+=(redis-server)
fi
if [[ -n "$testing" || -z "${STREAMREC_KAFKA_BOOTSTRAP:-}" ]]; then
  command -v java >/dev/null || [[ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]] || need+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || need+=(maven)
fi
if [[ -n "$testing" ]]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
((${#need[@]})) || exit 0

if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
  echo "installing ${need[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
  echo "installing ${need[*]} with sudo apt-get"
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "error: missing ${need[*]}: install with 'sudo apt-get install -y ${need[*]}'" \
       "(or point STREAMREC_REDIS_URL / STREAMREC_KAFKA_BOOTSTRAP at existing services)" >&2
  exit 1
fi
