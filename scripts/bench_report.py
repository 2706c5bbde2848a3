#!/usr/bin/env python3
"""Records and reports the runs of scripts/bench.sh.

  bench_report.py record --name N --group G --corpus F --seconds S
                         [--round R] --time-report T --log L [--keys-file K]
      prints one JSON line: wall time, peak RSS (from /usr/bin/time -v),
      distinct keys, every `snapshot completed` / `restored` log line's
      fields, and how long writes waited for a RocksDB checkpoint being made
      (pauses past the synchronous phase).
  bench_report.py report --results R --elapsed S --commit C --command CMD
                         [--plot PNG] [--doc BENCHMARKS.md]
      prints the markdown section (tables, targets met or not), writes the
      plot, and replaces the generated section of the doc.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys

FIELD = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")
BEGIN, END = "<!-- bench.sh:begin -->", "<!-- bench.sh:end -->"


def fields(line):
    return {k: v.strip('"') for k, v in FIELD.findall(line)}


def corpus_words(path):
    """Words in a corpus, counted once and kept next to it."""
    cached = path + ".words"
    if os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(path):
        return int(open(cached).read())
    with open(path, "rb") as f:
        words = sum(len(line.split()) for line in f)
    with open(cached, "w") as f:
        f.write(str(words))
    return words


def record(a):
    rss_kib, cpu_seconds = 0, 0.0
    with open(a.time_report) as f:
        for line in f:
            if "Maximum resident set size" in line:
                rss_kib = int(line.rsplit(":", 1)[1])
            elif "User time (seconds)" in line or "System time (seconds)" in line:
                cpu_seconds += float(line.rsplit(":", 1)[1])
    checkpoints, restore_ms, waits_us, network_bytes = [], None, [], None
    with open(a.log, errors="replace") as f:
        for line in f:
            sent = re.search(r"\((\d+) bytes sent to peers\)", line)
            if sent:
                # One line per process of a cluster run: their sum.
                network_bytes = (network_bytes or 0) + int(sent.group(1))
            if "snapshot completed" in line:
                x = fields(line)
                checkpoints.append({k: int(x[k]) for k in
                                    ("sync_us", "async_ms", "duration_ms", "full_bytes", "uploaded_bytes")})
            elif "waited for the checkpoint being made" in line:
                waits_us.append(int(fields(line)["wait_us"]))
            elif " restored" in line and "restore_ms=" in line:
                restore_ms = int(fields(line)["restore_ms"])
    keys = None
    if a.keys_file and os.path.exists(a.keys_file):
        with open(a.keys_file, "rb") as f:
            keys = sum(1 for _ in f)
    words = corpus_words(a.corpus)
    if a.group == "windows":
        # A timed corpus: every line's first token is its timestamp.
        with open(a.corpus, "rb") as f:
            words -= sum(1 for _ in f)
    print(json.dumps({
        "name": a.name, "group": a.group, "corpus": os.path.basename(a.corpus),
        "words": words, "keys": keys, "seconds": float(a.seconds), "round": int(a.round),
        "rss_mib": rss_kib // 1024, "cpu_seconds": round(cpu_seconds, 2),
        "checkpoints": checkpoints, "restore_ms": restore_ms, "checkpoint_waits_us": waits_us,
        "network_bytes": network_bytes,
    }))


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def mib(b):
    return "–" if b is None else f"{b / 2**20:.1f}"


def machine():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem = int(next(l.split()[1] for l in f if l.startswith("MemTotal"))) // 2**20
    return f"{os.cpu_count()} cores ({model}), {mem} GiB, {platform.system()} {platform.release()}"


def waits(r):
    w = r.get("checkpoint_waits_us", [])
    return f"{len(w)}, {ms(max(w))}" if w else "0"


def rate(r):
    return r["words"] / r["seconds"]


def busy(r):
    """Cores the run kept busy on average: its user + system CPU time over
    its wall time (None for runs recorded before CPU time was)."""
    return r["cpu_seconds"] / r["seconds"] if r.get("cpu_seconds") else None


def busy_cell(r):
    cores = busy(r)
    return "–" if cores is None else f"{cores:.2f}"


def median_runs(runs):
    """One run per name, in the order the names first ran: the run of median
    wall time when a name ran in several rounds."""
    by_name = {}
    for r in runs:
        by_name.setdefault(r["name"], []).append(r)
    return {name: sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2] for name, rs in by_name.items()}


def paired_ratios(runs, name, over):
    """`name`'s words/s over `over`'s, taken within each round (runs seconds
    apart on the same machine), for every round both ran in."""
    of = {}
    for r in runs:
        of.setdefault(r["name"], {})[r.get("round", 1)] = r
    mine, theirs = of.get(name, {}), of.get(over, {})
    return [rate(mine[k]) / rate(theirs[k]) for k in sorted(mine) if k in theirs]


def spread(ratios):
    """The median of a list of ratios, with its range when there is one."""
    middle = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{middle:.2f}×"
    return f"{middle:.2f}× (median of {len(ratios)} rounds, {min(ratios):.2f}–{max(ratios):.2f})"


def report(a):
    runs = [json.loads(l) for l in open(a.results) if l.strip()]
    by_group = {}
    for r in runs:
        by_group.setdefault(r["group"], []).append(r)
    out = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out += [BEGIN, f"## Latest `scripts/bench.sh` run: {now}, commit {a.commit}", "",
            f"Machine: {machine()}. Command: `{a.command.strip()}`; the whole run took "
            f"{a.elapsed // 60} min {a.elapsed % 60} s. Generated by `scripts/bench_report.py`; raw data in "
            "`docs/bench/results.jsonl`.", ""]

    main_runs = by_group.get("main", [])
    named = median_runs(main_runs)
    main = list(named.values())
    base = named.get("baseline")
    rounds = max((r.get("round", 1) for r in main_runs), default=1)
    targets = []
    if base:
        out += [f"### Word count, {base['words']:,} words, {base['keys']:,} distinct ({base['corpus']})", "",
                "Checkpoints every 1 s to `file://`. Pauses are the synchronous phase (the longest subtask's); "
                "waits are the times RocksDB's task thread later waited for a checkpoint being made "
                "(a write it could not hold back; count, max); "
                "async is the upload phase; bytes are per checkpoint (full = the state the checkpoint "
                "references, uploaded = written by it); cores busy is the run's user + system CPU time over "
                "its wall time."
                + (f" The baseline, fs p1 and fs p2 ran in {rounds} alternated rounds: their rows are the run of "
                   "median wall time, and every ratio is the median of the ratios within a round (a run "
                   "against the baseline seconds before it); the other runs went once, in the last round."
                   if rounds > 1 else ""), "",
                "| run | seconds | words/s | ratio to baseline | cores busy | peak RSS | checkpoints "
                "| sync pause p50 / p99 / max (ms) | waits (n, max ms) | async p50 / max (ms) | full MiB (last) "
                "| uploaded MiB p50 / max |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in main:
            c = r["checkpoints"]
            sync = [x["sync_us"] for x in c]
            asyn = [x["async_ms"] for x in c]
            up = [x["uploaded_bytes"] for x in c]
            ratios = paired_ratios(main_runs, r["name"], "baseline")
            out.append(
                f"| {r['name']} | {r['seconds']:.2f} | {rate(r):,.0f} | {statistics.median(ratios):.2f} | "
                f"{busy_cell(r)} | {r['rss_mib']} MiB | {len(c)} | "
                + (f"{ms(pct(sync, 50))} / {ms(pct(sync, 99))} / {ms(max(sync))} | {waits(r)} | "
                   f"{pct(asyn, 50)} / {max(asyn)} | {mib(c[-1]['full_bytes'])} | "
                   f"{mib(pct(up, 50))} / {mib(max(up))} |" if c else "– | – | – | – | – |"))
        if rounds > 1:
            out += ["", "Ratios round by round: "
                    + "; ".join(f"{name} " + ", ".join(f"{x:.2f}" for x in paired_ratios(main_runs, name, "baseline"))
                                for name in ("fs p1", "fs p2") if name in named)
                    + (("; fs p2 over fs p1 " + ", ".join(f"{x:.2f}" for x in paired_ratios(main_runs, "fs p2", "fs p1")))
                       if "fs p1" in named and "fs p2" in named else "")
                    + (("; fs 2 processes over fs p2 "
                        + ", ".join(f"{x:.2f}" for x in paired_ratios(main_runs, "fs 2 processes", "fs p2")))
                       if "fs 2 processes" in named and "fs p2" in named else "") + "."]

        sent = [r["network_bytes"] / r["words"] for r in main_runs if r.get("network_bytes") is not None]
        if sent:
            out += ["", f"Between processes (fs 2 processes): a median {statistics.median(sent):.2f} bytes sent "
                        f"per input word (timely's exchange and progress messages, both directions; "
                        f"sources fold words into partial sums first)."]

        def ratios(name, over="baseline"):
            return paired_ratios(main_runs, name, over) if name in named else []

        fs1, fs2_over_fs1, rk1 = ratios("fs p1"), ratios("fs p2", "fs p1"), ratios("rocksdb p1")
        cluster_over_p2 = ratios("fs 2 processes", "fs p2") if "fs p2" in named else []
        if cluster_over_p2:
            targets.append(("fs on 2 processes x 1 worker: ≥ 0.8× one process at p2 (words/s)",
                            spread(cluster_over_p2), statistics.median(cluster_over_p2) >= 0.8))
        if fs1:
            # A run shorter than the checkpoint interval completes none:
            # say so beside the ratio.
            done = len(named["fs p1"]["checkpoints"])
            targets.append(("fs backend, p1, checkpoints on: ≥ 1.9× baseline words/s",
                            spread(fs1) + f"; the median run completed {done} checkpoint{'s' * (done != 1)}",
                            statistics.median(fs1) >= 1.9))
        if fs2_over_fs1:
            # Parallelism 2 can only add the cores parallelism 1 leaves
            # idle: the ceiling this machine puts on the ratio, measured.
            fs1_cores = [busy(r) for r in main_runs if r["name"] == "fs p1" and busy(r)]
            cores = os.cpu_count() or 1
            ceiling = (f"; fs p1 kept a median {statistics.median(fs1_cores):.2f} of this machine's {cores} cores "
                       f"busy, so p2 can reach at most {cores / statistics.median(fs1_cores):.2f}× its p1 here"
                       if fs1_cores else "")
            targets.append(("fs backend, p2 ≥ 1.6× its p1", spread(fs2_over_fs1) + ceiling,
                            statistics.median(fs2_over_fs1) >= 1.6))
        if rk1:
            targets.append(("rocksdb, p1: ≥ 0.15× baseline words/s", spread(rk1), statistics.median(rk1) >= 0.15))
        for r in main:
            if r["checkpoints"] and (r["name"].endswith(" p1") or " p1," in r["name"]):
                # A wait for a checkpoint being made pauses the task thread
                # as the synchronous phase does: both count.
                worst = max([x["sync_us"] for x in r["checkpoints"]] + r.get("checkpoint_waits_us", []))
                targets.append((f"sync pause ≤ 10 ms, {r['name']} ({r['keys']:,} keys at the end)",
                                f"max {ms(worst)} ms (waits included)", worst <= 10_000))
        inc = named.get("fs incremental p1")
        if inc and inc["checkpoints"]:
            deltas = [x for x in inc["checkpoints"][1:] if x["uploaded_bytes"] < x["full_bytes"]]
            share = statistics.median(x["uploaded_bytes"] / x["full_bytes"] for x in deltas) if deltas else None
            out += ["", f"fs incremental p1: {len(deltas)} of {len(inc['checkpoints'])} checkpoints were deltas"
                    + (f"; a delta uploaded a median {share:.0%} of the state it stands for" if share else "")
                    + ". Bytes against bytes changed are checked exactly by "
                      "`state-fs/tests/incremental.rs` (a delta ≤ 2× the changed records)."]
        out.append("")

    restore = by_group.get("restore", [])
    if restore:
        rbase = next((r for r in restore if r["name"] == "baseline"), None)
        keys = rbase["keys"] if rbase else None
        out += [f"### Restore of a checkpoint taken at ~{(rbase or restore[0])['words']:,} words "
                f"({keys:,} distinct keys), `file://`" if keys else "### Restore", "",
                "`--from-checkpoint latest` of the last full checkpoint of a run over those words "
                "(checkpoints every 100 ms: it misses at most the last ~100 ms of input); the time is the job's own "
                "`restored … restore_ms` (download, verify, rebuild), the process's wall time beside it.", "",
                "| backend | restore ms | process seconds | target |", "|---|---|---|---|"]
        for r in restore:
            if r["name"] == "baseline":
                continue
            limit = 120 if r["name"].startswith("rocksdb") else 300
            # No `restored` line: the run found no checkpoint to restore,
            # which fails the target rather than hiding it.
            measured = "no checkpoint restored" if r["restore_ms"] is None else f"{r['restore_ms']} ms"
            out.append(f"| {r['name']} | {measured} | {r['seconds']:.2f} | ≤ {limit} ms |")
            targets.append((f"{r['name']} of ~{keys or 0:,} keys ≤ {limit} ms", measured,
                            r["restore_ms"] is not None and r["restore_ms"] <= limit))
        out.append("")

    windows = by_group.get("windows", [])
    if windows:
        wbase = next((r for r in windows if r["name"] == "baseline"), None)
        out += ["### Event-time windows", "",
                "`wordcount --window 1s --event-time --out-of-orderness 2s --output` over the main corpus with "
                "timestamps (`gen_corpus.py --timestamps 1 --disorder 2000`: one line per ms, up to 2 s out of "
                "order), checkpoints every 1 s, against `baseline_window_wordcount` (the same per-window counts "
                "in one single-thread loop) in the same run; every run's windows equal the baseline's. "
                "Checkpoint sizes first and last: they must not grow with the windows seen.", "",
                "| run | words/s | vs baseline | peak RSS MiB | checkpoints | pause p50 / max ms | "
                "first / last checkpoint KiB |", "|---|---|---|---|---|---|---|"]
        for r in windows:
            ratio = f"{wbase['seconds'] / r['seconds']:.2f}x" if wbase and r is not wbase else "1.00x"
            cks = r["checkpoints"]
            pauses = sorted(c["sync_us"] for c in cks)
            pause = f"{ms(pct(pauses, 50))} / {ms(pauses[-1])}" if pauses else "-"
            sizes = f"{cks[0]['full_bytes'] // 1024} / {cks[-1]['full_bytes'] // 1024}" if cks else "-"
            out.append(f"| {r['name']} | {r['words'] / r['seconds']:,.0f} | {ratio} | {r['rss_mib']} | "
                       f"{len(cks)} | {pause} | {sizes} |")
        out.append("")

    failover = by_group.get("failover", [])
    if failover:
        out += ["### Failover across processes", "",
                "`scripts/bench_failover.py`: the main corpus on 3 processes x 1 worker, checkpoints every 1 s to a "
                "real S3 server (s3s-fs on loopback); once half the words are counted and a checkpoint completed "
                "after that, one process is killed (SIGKILL) and all are restarted from `latest` at once. *Detect*: "
                "kill to the last survivor's exit; *restore*: the slowest process's restore; *total*: kill to every "
                "restarted process counting again (its `/metrics`). The restarted run's counts equal the "
                "baseline's.", "",
                "| run | keys | checkpoint MiB | detect s | restore s | restart to counting s | total s | target |",
                "|---|---|---|---|---|---|---|---|"]
        for r in failover:
            out.append(f"| {r['name']} | {r['keys']:,} | {mib(r['checkpoint_bytes'])} | {r['detect_s']:.2f} | "
                       f"{r['restore_s']:.2f} | {r['restart_to_counting_s']:.2f} | {r['total_s']:.2f} | ≤ 10 s |")
            targets.append((f"failover, {r['name']}, {r['keys']:,} keys: kill to counting again ≤ 10 s",
                            f"{r['total_s']:.2f} s", r["total_s"] <= 10))
        out.append("")

    increments = by_group.get("incremental bytes", [])
    if increments:
        first = increments[0]
        out += ["### Incremental checkpoint bytes against changed bytes", "",
                f"`cli/examples/incremental_bytes.rs`: a word count's state of {first['keys']:,} keys, checkpointed "
                f"to `file://`, then {first['changed_percent']}% of the keys (drawn at random) counted once more "
                "before each further checkpoint. Changed bytes are the distinct changed records' key + value, "
                "counted by the harness; uploaded bytes are what the checkpoint wrote. The first checkpoint "
                "(everything new) is left out. Incremental checkpoints are judged against the target; full "
                "ones are those that start a new chain (the heap backend's full file after 10 deltas, a RocksDB "
                "changelog's new base after 10 segments), as the issue's periodic full snapshot, and "
                "\"all together\" spreads their bytes over every checkpoint.", "",
                "| backend | incremental checkpoints | uploaded / changed p50 | max | full checkpoints "
                "(uploaded / changed) | all together | last full MiB |",
                "|---|---|---|---|---|---|---|"]
        for name in dict.fromkeys(r["name"] for r in increments):
            rows = [r for r in increments if r["name"] == name and r["checkpoint"] > 1]
            incremental = [r for r in rows if r.get("kind", "incremental") == "incremental"]
            full = [r for r in rows if r.get("kind") == "full"]
            if not incremental:
                continue
            ratios = [r["uploaded_bytes"] / r["changed_bytes"] for r in incremental]
            together = sum(r["uploaded_bytes"] for r in rows) / sum(r["changed_bytes"] for r in rows)
            fulls = ", ".join(f"{r['uploaded_bytes'] / r['changed_bytes']:.1f}×" for r in full) or "–"
            out.append(f"| {name} | {len(incremental)} | {statistics.median(ratios):.2f}× | {max(ratios):.2f}× | "
                       f"{len(full)}: {fulls} | {together:.2f}× | {mib(rows[-1]['full_bytes'])} |")
            targets.append((f"incremental checkpoint bytes ≤ 2× changed bytes, {name} ({len(incremental)} "
                            f"incremental checkpoints, {first['changed_percent']}% of {first['keys']:,} keys "
                            "changed before each)",
                            f"max {max(ratios):.2f}× (p50 {statistics.median(ratios):.2f}×; with the "
                            f"{len(full)} full, {together:.2f}× together)", max(ratios) <= 2))
        out.append("")

    # The main corpus is one more point of the sweep.
    sweep = sorted((g for g in by_group if g.startswith("sweep") or (g == "main" and len(by_group) > 2)),
                   key=lambda g: next((r["keys"] or 0 for r in by_group[g] if r["name"] == "baseline"), 0))
    points = []
    if sweep:
        out += ["### State size sweep (parallelism 1, checkpoints every 1 s)", "",
                "| corpus | distinct keys | baseline words/s | fs words/s (ratio) | rocksdb words/s (ratio) "
                "| fs checkpoint p50 ms (sync max) | rocksdb checkpoint p50 ms (sync max) | fs / rocksdb peak RSS |",
                "|---|---|---|---|---|---|---|---|"]
        for g in sweep:
            rs = median_runs(by_group[g])
            b, f, k = rs.get("baseline"), rs.get("fs p1"), rs.get("rocksdb p1")
            if not (b and f and k):
                continue

            def ck(r):
                c = r["checkpoints"]
                return (pct([x["duration_ms"] for x in c], 50), max((x["sync_us"] for x in c), default=None))

            def ck_cell(duration, sync):
                # A run shorter than the checkpoint interval completes none.
                return "none completed" if duration is None else f"{duration} ({ms(sync)})"

            (fd, fsync), (kd, ksync) = ck(f), ck(k)
            # Ratios as the targets take them: the median of in-round ratios.
            fr = statistics.median(paired_ratios(by_group[g], "fs p1", "baseline"))
            kr = statistics.median(paired_ratios(by_group[g], "rocksdb p1", "baseline"))
            points.append((b["keys"], rate(b), rate(f), rate(k), fd, kd))
            out.append(f"| {b['corpus']} | {b['keys']:,} | {rate(b):,.0f} | {rate(f):,.0f} ({fr:.2f}) | "
                       f"{rate(k):,.0f} ({kr:.2f}) | {ck_cell(fd, fsync)} | {ck_cell(kd, ksync)} | "
                       f"{f['rss_mib']} / {k['rss_mib']} MiB |")
        out += ["", "![words/s and checkpoint time against state size](bench/scaling.png)", ""]
        largest = max(sweep, key=lambda g: next((r["keys"] or 0 for r in by_group[g] if r["name"] == "baseline"), 0))
        rs = median_runs(by_group[largest])
        if "rocksdb p1" in rs and "baseline" in rs:
            k, b = rs["rocksdb p1"], rs["baseline"]
            targets.append((f"rocksdb peak RSS ≤ 256 MiB at {b['keys']:,} keys (whole word count process, "
                            "including its final results; baseline's HashMap in brackets)",
                            f"{k['rss_mib']} MiB ({b['rss_mib']} MiB)", k["rss_mib"] <= 256))

    if targets:
        out += ["### Targets (issue 7)", "", "| target | measured | met |", "|---|---|---|"]
        out += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
        out.append("")
    out.append(END)
    text = "\n".join(out) + "\n"
    print(text)

    if a.plot and points:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = [p[0] for p in points]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for i, label in ((1, "baseline (std HashMap)"), (2, "fs p1"), (3, "rocksdb p1")):
            left.plot(keys, [p[i] / 1e6 for p in points], marker="o", label=label)
        left.set(xscale="log", xlabel="distinct keys", ylabel="M words/s", title="Throughput")
        left.grid(True, which="both", alpha=0.3)
        left.legend()
        for i, label in ((4, "fs p1"), (5, "rocksdb p1")):
            # A run that completed no checkpoint has no point (not 0 ms).
            right.plot(keys, [float("nan") if p[i] is None else p[i] for p in points], marker="o", label=label)
        right.set(xscale="log", xlabel="distinct keys", ylabel="ms", title="Checkpoint duration (p50)")
        right.grid(True, which="both", alpha=0.3)
        right.legend()
        fig.suptitle(f"streamstate word count, {a.commit}, {now}")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)

    if a.doc:
        doc = open(a.doc).read()
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) + 1:]
        else:
            cut = doc.index("\n## ") + 1 if "\n## " in doc else len(doc)
            doc = doc[:cut] + text + "\n" + doc[cut:]
        open(a.doc, "w").write(doc)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    for opt in ("--name", "--group", "--corpus", "--seconds", "--time-report", "--log"):
        r.add_argument(opt, required=True)
    r.add_argument("--keys-file")
    r.add_argument("--round", default="1")
    q = sub.add_parser("report")
    q.add_argument("--results", required=True)
    q.add_argument("--elapsed", type=int, required=True)
    q.add_argument("--commit", required=True)
    q.add_argument("--command", required=True)
    q.add_argument("--plot")
    q.add_argument("--doc")
    a = p.parse_args()
    record(a) if a.cmd == "record" else report(a)


if __name__ == "__main__":
    sys.exit(main())
