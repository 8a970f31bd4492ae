#!/bin/sh
# Installs the ACME agent from the package group's files, unattended and synchronously.
# The build runs this with the package files in the current directory and stdin closed; exit 0 means installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${ACME_PREFIX:-/opt/acme}
mkdir -p "$prefix"
tar -xzf "$here/acme-agent-2.4.0.tar.gz" -C "$prefix"
"$prefix/acme-agent/bin/acme-agent" --version
echo "acme-agent installed in $prefix"
