"""Soak: Downpour with sharded servers and checkpoints under repeated faults, for a bounded time.

The digits MLP trains with ``--num-shards`` shards (threads, or child processes with
``--shard-processes``) and checkpoints, epoch after epoch, until ``--minutes`` are up. Every
``--kill-every`` seconds a random running replica's Python worker is SIGKILLed (Spark retries
its task; the retry skips what the server already applied). With ``--kill-driver`` the whole
driver is also SIGKILLed once or more (every ``--driver-every`` seconds) and a new driver resumes
from the newest checkpoint (``fit(resume=True)``). A clean run of the same number of epochs
is then trained for comparison.

The last lines printed: per shard, updates applied vs mini-batches pushed (equal: nothing lost,
nothing doubled), duplicates refused, retries, resumes, and the final held-out accuracy vs the
clean run's; the very last line is one JSON summary. Not part of the test suite:

    python jobs/soak.py --minutes 10 --kill-every 20 --kill-driver --shard-processes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long to train under faults")
    p.add_argument("--kill-every", type=float, default=20.0,
                   help="SIGKILL a random replica's Python worker every N seconds (0: never)")
    p.add_argument("--kill-driver", action="store_true",
                   help="also SIGKILL the driver (then resume from its checkpoint)")
    p.add_argument("--driver-every", type=float, default=150.0,
                   help="with --kill-driver: seconds between driver kills")
    p.add_argument("--num-shards", type=int, default=4)
    p.add_argument("--shard-processes", action="store_true", help="every shard in a child")
    p.add_argument("--master", default="local[2,4]",
                   help="Spark master; it must retry tasks (local[N,F] or a cluster)")
    p.add_argument("--checkpoint-dir", help="default: a fresh temporary folder")
    p.add_argument("--checkpoint-every-updates", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-clean-run", action="store_true", help="skip the comparison run")
    p.add_argument("--driver", help=argparse.SUPPRESS)  # internal: run one driver (JSON options)
    return p.parse_args(argv)


# -- one driver: trains until its deadline, killing Python workers as it goes ----------------

def run_driver(options: dict) -> None:
    from pyspark.sql import SparkSession

    from sparkdownpour import Downpour
    from sparkdownpour.callbacks import LambdaCallback
    from sparkdownpour.examples import arrays_to_frame, build_digits_mlp, digits_arrays

    spark = (SparkSession.builder.master(options["master"]).appName("sparkdownpour-soak")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    x_train, y_train, x_test, y_test = digits_arrays()
    frame = arrays_to_frame(spark, x_train, y_train, 4)
    sizes = frame.rdd.glom().map(len).collect()
    batches = sum(-(-n // 32) for n in sizes)
    options["partition_batches"] = [-(-n // 32) for n in sizes]
    deadline = time.time() + options["seconds"]  # wall clock: shared with the supervisor
    seen: dict = {"kills": [], "retries": {}}
    stop = threading.Event()

    def on_server_start(server):
        seen["server"] = server
        print("SERVER", json.dumps({"pids": getattr(server, "pids", [])}), flush=True)
        if options["kill_every"] > 0:
            threading.Thread(target=kill_workers, args=(server, options, seen, stop),
                             daemon=True).start()

    def keep_status(record):
        seen["status"] = seen["server"].store.status()
        return time.time() >= deadline

    trainer = Downpour(build_digits_mlp, epochs=options["epochs"], num_shards=options["shards"],
                       shard_processes=options["processes"], verbose=0, seed=options["seed"],
                       checkpoint_dir=options["checkpoint_dir"],
                       checkpoint_every_updates=options["checkpoint_every_updates"],
                       num_replicas=4)  # every partition a replica: more tasks to kill
    started = time.monotonic()
    result = trainer.fit(frame, validation_data=(x_test, y_test), resume=options["resume"],
                         stop_when=keep_status,
                         callbacks=[LambdaCallback(on_server_start=on_server_start)])
    stop.set()
    history, status = result.history, seen["status"]
    import numpy as np

    accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
    shards = status.get("shards", [status])
    print("RESULT", json.dumps({
        "accuracy": accuracy, "seconds": time.monotonic() - started,
        "epochs_done": history.epochs[-1]["epoch"], "epochs_run": len(history),
        "batches_per_epoch": batches,
        "shard_updates": [s["updates_applied"] for s in shards],
        "shard_duplicates": [s["duplicates_refused"] for s in shards],
        "skipped_steps": int(sum(history["skipped_steps"])),
        "resumed_from": history.info.get("resumed_from"),
        "worker_kills": seen["kills"],
        "retries_seen": sum(seen["retries"].values()),
    }), flush=True)
    spark.stop()


def kill_workers(server, options: dict, seen: dict, stop: threading.Event) -> None:
    """Every ``kill_every`` seconds SIGKILL the Python worker of one running replica (pids
    from the server's status route); meanwhile count the task retries the server sees."""
    from sparkdownpour.server import ParameterClient

    rng = random.Random(options["seed"] + os.getpid())
    next_kill = time.monotonic() + options["kill_every"]
    with ParameterClient(server.url, server.token, timeout=5, retries=1) as client:
        while not stop.wait(0.2):
            try:
                status = client.status()
            except Exception:  # noqa: BLE001 - the run is ending; the soak reports the rest
                return
            for partition, attempt in status["attempts"].items():
                key = f"{attempt['epoch']}/{partition}"
                seen["retries"][key] = max(seen["retries"].get(key, 0), int(attempt["attempt"]))
            if time.monotonic() < next_kill:
                continue
            # Only a worker whose replica is mid-partition: its task fails and is retried.
            busy = {int(a["pid"]) for partition, a in status["attempts"].items()
                    if a["epoch"] == status["epoch"]
                    and status["progress"].get(f"{a['epoch']}/{partition}", 0)
                    < options["partition_batches"][int(partition)]}
            alive = [pid for pid in sorted(busy - {os.getpid()}) if _alive(pid)]
            if alive:
                pid = rng.choice(alive)
                try:
                    os.kill(pid, signal.SIGKILL)
                    seen["kills"].append({"pid": pid, "at_update": status["updates_applied"]})
                except ProcessLookupError:
                    pass
                next_kill = time.monotonic() + options["kill_every"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "\nState:\tZ" not in handle.read()
    except FileNotFoundError:
        return False


# -- the supervisor: drivers in their own sessions, killed and resumed ------------------------

def start_driver(options: dict) -> subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--driver",
                             json.dumps(options)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)


def read_lines(proc: subprocess.Popen, lines: list) -> threading.Thread:
    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def kill_driver(proc: subprocess.Popen, lines: list) -> list[int]:
    """SIGKILL the driver alone (as the OOM killer would), then anything left in its session;
    returns the shard children it had, which must have exited by themselves."""
    children = [pid for line in lines if line.startswith("SERVER ")
                for pid in json.loads(line[7:])["pids"]]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its JVM and Python workers, if still there
    except ProcessLookupError:
        pass
    return [pid for pid in children if _alive(pid)]


def _newest_checkpoint(directory: str) -> str | None:
    names = sorted(p.name for p in Path(directory).glob("ckpt-*.npz"))
    return names[-1] if names else None


def supervise(args: argparse.Namespace) -> dict:
    checkpoint_dir = args.checkpoint_dir or tempfile.mkdtemp(prefix="sparkdownpour-soak-")
    end = time.time() + 60 * args.minutes
    base = {"master": args.master, "shards": args.num_shards, "processes": args.shard_processes,
            "checkpoint_dir": checkpoint_dir, "seed": args.seed, "epochs": 100_000,
            "checkpoint_every_updates": args.checkpoint_every_updates,
            "kill_every": args.kill_every}
    rng = random.Random(args.seed)
    resumes, driver_kills, orphans, result = 0, 0, [], None
    started = time.monotonic()
    while result is None:
        options = {**base, "seconds": max(end - time.time(), 0.0), "resume": resumes > 0 or
                   driver_kills > 0}
        lines: list[str] = []
        proc = start_driver(options)
        reader = read_lines(proc, lines)
        kill_at = None
        if args.kill_driver and end - time.time() > 90:  # leave time for a resume to finish
            kill_at = time.monotonic() + min(args.driver_every * rng.uniform(0.5, 1.0),
                                             end - time.time() - 60)
        newest = _newest_checkpoint(checkpoint_dir)
        while proc.poll() is None:
            # A driver is killed only once it has checkpointed: a resume then has work to skip.
            if kill_at is not None and time.monotonic() >= kill_at \
                    and _newest_checkpoint(checkpoint_dir) != newest:
                orphans += kill_driver(proc, lines)
                driver_kills += 1
                logging.warning("soak: driver %d SIGKILLed; resuming", proc.pid)
                break
            time.sleep(0.2)
        reader.join(10)
        if proc.returncode not in (0, -signal.SIGKILL):
            raise SystemExit(f"soak: a driver failed (exit code {proc.returncode}):\n"
                             + "\n".join(lines[-20:]))
        if kill_at is not None and proc.returncode == -signal.SIGKILL:
            resumes += 1
            continue
        (line,) = [line for line in lines if line.startswith("RESULT ")]
        result = json.loads(line[7:])
    result.update(minutes=(time.monotonic() - started) / 60, driver_kills=driver_kills,
                  resumes=resumes, orphaned_shard_children=orphans)
    if not args.no_clean_run:
        clean = {**base, "seconds": 1e9, "resume": False, "kill_every": 0,
                 "epochs": result["epochs_done"],
                 "checkpoint_dir": tempfile.mkdtemp(prefix="sparkdownpour-soak-clean-")}
        lines = []
        proc = start_driver(clean)
        reader = read_lines(proc, lines)
        proc.wait()
        reader.join(10)
        (line,) = [line for line in lines if line.startswith("RESULT ")]
        result["clean_accuracy"] = json.loads(line[7:])["accuracy"]
    return result


def report(result: dict) -> None:
    expected = result["epochs_done"] * result["batches_per_epoch"]
    print(f"soak: {result['minutes']:.1f} min, {result['epochs_done']} epochs, "
          f"{len(result['worker_kills'])} Python workers killed (last driver), "
          f"{result['driver_kills']} driver kills, {result['resumes']} resumes")
    for i, (applied, duplicates) in enumerate(zip(result["shard_updates"],
                                                  result["shard_duplicates"])):
        print(f"shard {i}: updates applied {applied}, mini-batches pushed {expected} "
              f"({'equal' if applied == expected else 'DIFFERENT'}), duplicates refused "
              f"{duplicates}")
    print(f"task retries seen by the server (last driver): {result['retries_seen']}; "
          f"mini-batches skipped as already applied (retries, resume): "
          f"{result['skipped_steps']}")
    clean = result.get("clean_accuracy")
    print(f"accuracy {result['accuracy']:.4f}"
          + (f" vs a clean run of as many epochs {clean:.4f}" if clean is not None else ""))
    ok = all(applied == expected for applied in result["shard_updates"]) \
        and not result["orphaned_shard_children"]
    print(json.dumps({**result, "mini_batches_pushed": expected, "exactly_once": ok}))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.driver:
        run_driver(json.loads(args.driver))
        return 0
    result = supervise(args)
    report(result)
    return 0 if all(a == result["epochs_done"] * result["batches_per_epoch"]
                    for a in result["shard_updates"]) else 1


if __name__ == "__main__":
    sys.exit(main())
