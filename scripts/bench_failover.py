#!/usr/bin/env python3
"""Failover time of the cluster executor, for scripts/bench.sh.

Runs the word count on PROCESSES local processes (one worker each) with
checkpoints on STORAGE (the bench starts s3s-fs for s3://), and once the
processes have counted half the input and a checkpoint completed after
that (most of the corpus's keys are in it: records_in on the processes'
/metrics add up to half the words), kills one with SIGKILL. Then
measures, as an operator restarting every process at once would see it:

  detect   kill -> the last survivor has exited (naming the lost peer)
  restore  restart -> every process restored from `latest` (its metrics'
           restore time, the slowest process's)
  total    kill -> every restarted process counting again (records_in > 0
           on each one's /metrics)

The restarted run goes to its end, and the union of its outputs must equal
EXPECTED (the baseline's counts), or the bench fails. Prints one JSON line.

Usage: bench_failover.py --bin B --input F --storage URI --expected TSV
                         [--processes 3] [--backend rocksdb]
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def scrape(port, process):
    """The process's series as {name: value}; None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    suffix = f'{{process="{process}"}} '
    series = {}
    for line in text.splitlines():
        if suffix in line and not line.startswith("#"):
            name, value = line.split(suffix, 1)
            series[name] = float(value)
    return series


def fail(message, procs=()):
    for p in procs:
        if p.poll() is None:
            p.kill()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--backend", default="rocksdb")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="streamstate-failover.")
    n = a.processes
    hosts = os.path.join(work, "hosts")
    with open(hosts, "w") as f:
        f.writelines(f"127.0.0.1:{p}\n" for p in free_ports(n))
    storage = f"{a.storage.rstrip('/')}/failover-{os.getpid()}"

    def start(run, restore):
        ports = free_ports(n)
        procs = []
        for i in range(n):
            cmd = [a.bin, "wordcount", "--input", a.input, "--state-backend", a.backend,
                   "--checkpoint-dir", storage, "--checkpoint-interval", "1s",
                   "--output", os.path.join(work, f"counts-{run}.{i}"),
                   "--processes", str(n), "--process", str(i), "--hosts", hosts, "--workers", "1",
                   "--metrics-addr", f"127.0.0.1:{ports[i]}"]
            if restore:
                cmd += ["--from-checkpoint", "latest"]
            log = open(os.path.join(work, f"log-{run}.{i}"), "w")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log))
        return procs, ports

    def wait_until(what, procs, done, timeout=600):
        deadline = time.monotonic() + timeout
        while not done():
            if any(p.poll() is not None for p in procs):
                fail(f"a process exited before {what} (logs in {work})", procs)
            if time.monotonic() > deadline:
                fail(f"timed out waiting for {what}", procs)
            time.sleep(0.02)

    procs, ports = start(0, False)

    with open(a.expected) as f:
        expected = {w: int(c) for w, c in (line.rstrip("\n").split("\t") for line in f)}
    words = sum(expected.values())

    def halfway():
        seen = [scrape(ports[i], i) for i in range(n)]
        return all(seen) and sum(s.get("streamstate_records_in_total", 0) for s in seen) >= words / 2

    wait_until("half the input counted", procs, halfway)
    before = scrape(ports[0], 0)["streamstate_checkpoints_completed_total"]
    wait_until("a checkpoint after the halfway mark", procs,
               lambda: (scrape(ports[0], 0) or {}).get("streamstate_checkpoints_completed_total", 0) > before)
    checkpoint_bytes = scrape(ports[0], 0)["streamstate_last_checkpoint_size_bytes"]
    victim = 1 % n
    killed_at = time.monotonic()
    procs[victim].send_signal(signal.SIGKILL)
    for i, p in enumerate(procs):
        try:
            code = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            fail(f"process {i} did not stop within 60 s of losing process {victim}", procs)
        if i != victim and code == 0:
            fail(f"process {i} succeeded although process {victim} was killed")
    detected_at = time.monotonic()

    procs, ports = start(1, True)
    restarted_at = time.monotonic()
    counting = [None] * n
    restore_s = [0.0] * n

    def all_counting():
        for i in range(n):
            if counting[i] is None:
                s = scrape(ports[i], i)
                if s and s.get("streamstate_records_in_total", 0) > 0:
                    counting[i] = time.monotonic()
                    restore_s[i] = s.get("streamstate_restore_duration_seconds", 0.0)
        return all(c is not None for c in counting)

    wait_until("every restarted process counting", procs, all_counting)
    for i, p in enumerate(procs):
        if p.wait(timeout=600) != 0:
            fail(f"restarted process {i} failed (log in {work}/log-1.{i})")
    union = {}
    for i in range(n):
        with open(os.path.join(work, f"counts-1.{i}")) as f:
            for line in f:
                word, count = line.rstrip("\n").split("\t")
                union[word] = int(count)
    if union != expected:
        fail(f"the restarted run counted differently from the baseline (outputs in {work})")
    print(json.dumps({
        "group": "failover", "name": f"{a.backend}, {n} processes, {a.storage.split(':')[0]}://",
        "keys": len(expected), "checkpoint_bytes": int(checkpoint_bytes),
        "detect_s": round(detected_at - killed_at, 3),
        "restart_to_counting_s": round(max(counting) - restarted_at, 3),
        "restore_s": round(max(restore_s), 3),
        "total_s": round(max(counting) - killed_at, 3),
    }))
    subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
