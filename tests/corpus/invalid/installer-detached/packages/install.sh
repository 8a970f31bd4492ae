#!/bin/sh
set -eu
nohup ./agent-setup --unattended
