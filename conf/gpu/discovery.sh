#!/usr/bin/env bash
# Spark GPU discovery script (spark.{worker,executor,driver}.resource.gpu.discoveryScript).
#
# Contract: print one JSON ResourceInformation on stdout, e.g.
#     {"name": "gpu", "addresses": ["0", "1"]}
# The addresses are nvidia-smi's indices, which number GPUs in PCI bus order; sparkdownpour sets
# CUDA_DEVICE_ORDER=PCI_BUS_ID in its Python workers so CUDA (and TensorFlow) agree with them.
# If the executor already runs with CUDA_VISIBLE_DEVICES set (YARN's or a container runtime's
# isolation), nvidia-smi lists only those GPUs, and sparkdownpour reads the addresses as
# positions in that list.
set -euo pipefail

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "discovery.sh: nvidia-smi not found on $(hostname); install the NVIDIA driver, or do not" \
       "request spark.*.resource.gpu.amount on this node" >&2
  exit 1
fi

# One index per line -> "0","1",...
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ' \
  | awk 'NF { printf "%s\"%s\"", (n++ ? "," : ""), $1 }')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
