"""Spark GPU scheduling end to end without a GPU: a fake discovery script on local-cluster.

Each worker's discovery script claims one address ("0" or "1"), so Spark assigns every task a
GPU address, and every task must narrow its TensorFlow to that address and then fall back to
the CPU cleanly, since no physical GPU exists on this machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "gpu" / "cluster_driver.py"
NO_GPU = "no usable GPU for device='gpu'"


@pytest.fixture
def fake_discovery(tmp_path):
    """A discovery script that gives the first worker to ask GPU "0" and the next "1"."""
    claims = tmp_path / "claims"
    claims.mkdir()
    script = tmp_path / "discovery.sh"
    script.write_text(f"""#!/bin/sh
for a in 0 1; do
  if mkdir "{claims}/gpu-$a" 2>/dev/null; then
    echo '{{"name": "gpu", "addresses": ["'$a'"]}}'; exit 0
  fi
done
echo '{{"name": "gpu", "addresses": []}}'
""")
    script.chmod(0o755)
    return script


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_each_task_narrows_tensorflow_to_its_spark_gpu_and_falls_back_to_cpu(fake_discovery):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps({"discovery": str(fake_discovery)})],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    checks = {c["check"]: c for c in map(json.loads, filter(
        lambda line: line.startswith("{"), proc.stdout.splitlines()))}

    auto = checks["auto"]
    tasks = [task for epoch in auto["epochs"] for task in epoch.values()]
    assert len(tasks) == 3 * 2  # three epochs of one replica per executor (4 partitions merged)
    assert {t["gpu_addresses"] for t in tasks} == {"0", "1"}  # both executors' GPUs were used
    for t in tasks:
        address = t["gpu_addresses"]
        # A fresh worker narrows CUDA before TensorFlow loads; one that had imported it uses
        # tf.config. Either way only the task's own address.
        assert t["visible"] in (f"CUDA_VISIBLE_DEVICES={address}",
                                f"tf.config.set_visible_devices(GPU {address})"), t
        assert t["device"] == "/CPU:0" and t["variable_device"].endswith("CPU:0"), t
        assert "sees no GPU" in t["note"] and "physical GPUs: 0" in t["note"], t
    assert auto["info_devices"] == ["CPU:0 (spark gpu 0)", "CPU:0 (spark gpu 1)"]
    assert auto["val_accuracy"] >= 0.8  # three epochs; it trained, on the CPU

    gpu = checks["gpu"]
    assert gpu["type"] == "RuntimeError" and NO_GPU in gpu["error"], gpu
    assert "sees no GPU" in gpu["error"] and "device='auto'" in gpu["error"]

    fractional = checks["fractional"]["tasks"]
    assert len(fractional) == 2
    for t in fractional:
        assert len(t["addresses"]) == 1 and t["addresses"][0] in ("0", "1"), t
        assert t["visible"] in (f"CUDA_VISIBLE_DEVICES={t['addresses'][0]}",
                                f"tf.config.set_visible_devices(GPU {t['addresses'][0]})"), t
        assert t["device"] == "/CPU:0" and "sees no GPU" in t["note"]
