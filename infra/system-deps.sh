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
# Whether a Java the stack would run is 17+ (infra/java.py: $JAVA_HOME's, else PATH's):
# any Java on PATH passed before, and Ubuntu 22.04's default 11 then failed at `stack up`.
java_ok() {
  local bin major
  for bin in "${JAVA_HOME:-/nonexistent}/bin/java" "$(command -v java || true)"; do
    [[ -x "$bin" ]] || continue
    major=$("$bin" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
    [[ -n "$major" && "$major" -ge 17 ]] && return 0
  done
  return 1
}
if [[ -n "$testing" || -z "${STREAMREC_KAFKA_BOOTSTRAP:-}" ]]; then
  java_ok || need+=(java)
  command -v mvn >/dev/null || need+=(maven)
fi
if [[ -n "$testing" ]]; then  # the browser test takes either name (tests/integration/browser.py)
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
fi
((${#need[@]})) || exit 0

if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo)
else
  echo "error: missing ${need[*]/#java/a Java 17+ runtime}: install them with your package" \
       "manager (or point STREAMREC_REDIS_URL / STREAMREC_KAFKA_BOOTSTRAP at existing" \
       "services)" >&2
  exit 1
fi
# A freshly booted machine's unattended upgrades may hold the dpkg lock for minutes; a
# mirror may drop a connection. Wait for the one, retry the other.
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq
     -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
"${apt[@]}" update
# Java 17 where the release has it (Debian 12), else the release's default runtime
# (Debian 13 ships 21 and 25 only; Kafka runs on 17 and later).
if [[ " ${need[*]} " == *" java "* ]]; then
  java=default-jre-headless
  apt-cache show openjdk-17-jre-headless >/dev/null 2>&1 && java=openjdk-17-jre-headless
  need=("${need[@]/#java/$java}")
fi
# Ubuntu has no "chromium" package (its chromium-browser installs a snap): the others are
# installed without it, and the browser test says what is missing.
if [[ " ${need[*]} " == *" chromium "* ]] && ! apt-cache show chromium >/dev/null 2>&1; then
  echo "warning: no chromium package here: install chromium by hand for the dashboard's" \
       "browser test" >&2
  kept=()
  for package in "${need[@]}"; do [[ $package == chromium ]] || kept+=("$package"); done
  need=("${kept[@]}")
  ((${#need[@]})) || exit 0
fi
echo "installing ${need[*]} with ${as_root[*]:+sudo }apt-get"
"${apt[@]}" install -y "${need[@]}" >/dev/null
