#!/usr/bin/env bash
# DynamoDB Local, AWS's own implementation of DynamoDB, for the aws backend's tests and benchmarks
# (the npm package amplify-dynamodb-simulator carries its jar; it runs on Java 17).
#
#   scripts/dynamodb-local.sh install            installs it under target/dynamodb-local
#   scripts/dynamodb-local.sh start PORT LOGFILE  starts it in memory on 127.0.0.1:PORT, prints its pid
#
# Pair it with any S3 server for the items: [storage.aws] dynamodb_endpoint and s3_endpoint.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/target/dynamodb-local
jar_dir=$dir/node_modules/amplify-dynamodb-simulator/emulator

die() { echo "dynamodb-local.sh: $*" >&2; exit 1; }

install() {
  if ! command -v java >/dev/null; then
    echo "installing a Java runtime (DynamoDB Local)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null
  fi
  [ -f "$jar_dir/DynamoDBLocal.jar" ] && return 0
  command -v npm >/dev/null || die "npm is required to fetch DynamoDB Local"
  echo "installing DynamoDB Local (npm amplify-dynamodb-simulator)" >&2
  mkdir -p "$dir"
  (cd "$dir" && npm install --silent --no-audit --no-fund amplify-dynamodb-simulator@2.9.30 >/dev/null)
  [ -f "$jar_dir/DynamoDBLocal.jar" ] || die "the package carries no DynamoDBLocal.jar"
}

start() { # PORT LOGFILE
  [ -f "$jar_dir/DynamoDBLocal.jar" ] || die "not installed: run $0 install"
  cd "$jar_dir"
  java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -inMemory -sharedDb -port "$1" > "$2" 2>&1 &
  echo $!
}

case "${1:-}" in
  install) install ;;
  start) [ $# -eq 3 ] || die "usage: $0 start PORT LOGFILE"; start "$2" "$3" ;;
  *) die "usage: $0 install | start PORT LOGFILE" ;;
esac
