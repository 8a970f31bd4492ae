#!/bin/sh
set -eu
read -p 'Install directory? ' prefix
tar -xzf agent.tar.gz -C "$prefix"
