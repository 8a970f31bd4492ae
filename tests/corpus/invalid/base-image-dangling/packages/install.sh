#!/bin/sh
# Installs the agent from the package group's files, unattended.
set -eu
tar -xzf agent.tar.gz -C /opt
