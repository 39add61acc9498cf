"""Tables, the targets table and charts of `scripts/bench` runs (imported by scripts/bench).

A run is one JSON object (bench/results/all-<stamp>.json): machine limits, and the raw results of each part
(sync, objects, client, files, postgres) as the part's own script wrote them. Everything here is computed from that
object alone, so an old run can be re-rendered or compared with a new one (`scripts/bench --compare OLD NEW`).
"""
import os
import statistics

# ---------------------------------------------------------------------------------------------------------------
# small helpers


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [value for value in values if value is not None]
    return (min(values), max(values)) if values else (None, None)


def num(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio_text(ours, theirs, higher_is_better):
    if not ours or not theirs:
        return "–"
    factor = ours / theirs if higher_is_better else theirs / ours
    return f"{factor:,.1f}×"


def fraction(value, limit):
    return "–" if not value or not limit else f"{value / limit:.0%}"


def status(ok):
    if ok is None:
        return "not measured"
    return "met" if ok else "**not met**"


# ---------------------------------------------------------------------------------------------------------------
# per-part accessors


def sync_values(run, scenario, server, pick):
    entries = run.get("sync", {}).get("results", [])
    values = []
    for entry in entries:
        if entry["scenario"] == scenario and entry["server"] == server and entry.get("result"):
            try:
                values.append(pick(entry["result"]))
            except (KeyError, TypeError):
                pass
    return values


def sync_scenario(run, prefix):
    """The full name of the sync scenario starting with `prefix` (names carry counts)."""
    for entry in run.get("sync", {}).get("results", []):
        if entry["scenario"].startswith(prefix):
            return entry["scenario"]
    return prefix


def client_values(run, client, workload, key="value", events=None):
    results = run.get("client", {}).get("results", [])
    return [result[key] for result in results if result["client"] == client and result["workload"] == workload
            and (events is None or result["events"] == events) and result.get(key) is not None]


def client_sizes(run, workload):
    results = run.get("client", {}).get("results", [])
    return sorted({r["events"] for r in results if r["client"] == "livestore-rs" and r["workload"] == workload})


def files_values(run, client, workload, fs, key):
    results = run.get("files", {}).get("results", [])
    return [entry["result"][key] for entry in results if entry["client"] == client and entry["workload"] == workload
            and entry["fs"] == fs and key in entry["result"]]


def postgres_values(run, name, pick):
    runs = run.get("postgres", {}).get("runs", [])
    return [pick(entry["result"]) for entry in runs if entry["name"] == name]


def objects_runs(run, fs):
    return [entry for entry in run.get("objects", []) if entry.get("fs") == fs]


# ---------------------------------------------------------------------------------------------------------------
# the targets of every issue


def targets(run):
    """Rows (area, target, measured, limit fraction, ours vs original, status) for every numeric target."""
    limits = run.get("limits", {})
    rows = []

    def add(area, target, measured, limit, versus, ok):
        rows.append((area, target, measured, limit, versus, status(ok)))

    # Sync server.
    one = sync_scenario(run, "ingest, 1 store, batches of 100, one push in flight")
    piped = sync_scenario(run, "ingest, 1 store, batches of 100, 8 pushes in flight")
    many = sync_scenario(run, "ingest, 100 stores")
    rate = lambda result: result["events_per_sec"]
    ours_one, ref_one = median(sync_values(run, one, "livestore-rs", rate)), median(sync_values(run, one, "sync-cf-reference", rate))
    ours_piped = median(sync_values(run, piped, "livestore-rs", rate))
    sqlite_limit = limits.get("sqlite_wal_full_inserts_per_second_batched_1000")
    if ours_one is not None:
        ok = ours_one >= 50_000 or (ours_piped or 0) >= 50_000
        add("sync server", "push ingest into one store ≥ 50,000 events/s (batches of 100)",
            f"{num(ours_one)} events/s one push in flight; {num(ours_piped)} with 8 in flight",
            fraction(max(ours_one, ours_piped or 0), sqlite_limit) + " of SQLite batched inserts",
            ratio_text(ours_one, ref_one, True), ok if ours_one >= 50_000 else (True if ok else False))
        if ok and ours_one < 50_000:
            rows[-1] = rows[-1][:5] + ("met with pipelined pushes; not with one push in flight",)
    ours_many, ref_many = median(sync_values(run, many, "livestore-rs", rate)), median(sync_values(run, many, "sync-cf-reference", rate))
    if ours_many is not None:
        add("sync server", "push ingest across 100 stores ≥ 50,000 events/s", f"{num(ours_many)} events/s",
            fraction(ours_many, sqlite_limit) + " of SQLite batched inserts", ratio_text(ours_many, ref_many, True),
            ours_many >= 50_000)
    for subscribers, label in ((1000, "1,000"), (100, "100")):
        scenario = sync_scenario(run, f"fan-out, {label} subscribers")
        p99 = median(sync_values(run, scenario, "livestore-rs", lambda r: r["last_delivery"]["p99_ms"]))
        p50 = median(sync_values(run, scenario, "livestore-rs", lambda r: r["last_delivery"]["p50_ms"]))
        ref_p50 = median(sync_values(run, scenario, "sync-cf-reference", lambda r: r["last_delivery"]["p50_ms"]))
        floor = limits.get("loopback_fanout_1000_last_delivery_ms", {})
        if p99 is None:
            continue
        if subscribers == 1000:
            add("sync server", "fan-out of one push to 1,000 live subscribers, last delivery p99 ≤ 20 ms",
                f"p50 {num(p50, 1)} ms, p99 {num(p99, 1)} ms",
                f"loopback floor p50 {num(floor.get('p50_ms'), 1)} / p99 {num(floor.get('p99_ms'), 1)} ms",
                ratio_text(p50, ref_p50, False) + " (p50)", p99 <= 20)
        else:
            add("sync server", "fan-out of one push to 100 live subscribers (no target; the reference comparison)",
                f"p50 {num(p50, 1)} ms, p99 {num(p99, 1)} ms", "–", ratio_text(p50, ref_p50, False) + " (p50)", None)
            rows[-1] = rows[-1][:5] + ("reported",)
    backlog = sync_scenario(run, "backlog pull")
    ours_backlog = sync_values(run, backlog, "livestore-rs", lambda r: (r["events_per_sec"], r["events"]))
    ref_backlog = median(sync_values(run, backlog, "sync-cf-reference", rate))
    if ours_backlog:
        value, events = median([v for v, _ in ours_backlog]), ours_backlog[0][1]
        ok = value >= 200_000 if events >= 1_000_000 else None
        add("sync server", "backlog: a fresh client pulls 1,000,000 events at ≥ 200,000 events/s",
            f"{num(value)} events/s ({num(events)} events)", "–", ratio_text(value, ref_backlog, True), ok)
        if ok is None:
            rows[-1] = rows[-1][:5] + (f"{'met' if value >= 200_000 else 'not met'} at {num(events)} events (quick run)",)
    idle = [e for e in run.get("sync", {}).get("results", []) if e["scenario"].endswith("idle WebSocket clients")]
    if idle and idle[0].get("result"):
        result = idle[0]["result"]
        projected = result["server_rss_before_mib"] + result["server_rss_per_connection_kib"] * 10_000 / 1024
        measured = f"{num(result['server_rss_after_mib'], 0)} MiB with {num(result['connections'])} clients"
        if result["connections"] < 10_000:
            measured += f" (projected {num(projected)} MiB at 10,000)"
        add("sync server", "10,000 idle WebSocket clients in ≤ 1 GiB RSS", measured, "–", "–", projected <= 1024)

    # Client.
    js_events = run.get("client", {}).get("js_events")

    def client_row(workload, target, check, measured_of, higher, events=None, unit_note=""):
        ours = {key: median(client_values(run, "livestore-rs", workload, key, events)) for key in ("value", "p50", "p99")}
        theirs = median(client_values(run, "livestore-js", workload))
        if ours["value"] is None:
            return
        verdict = check(ours)
        factor = ratio_text(ours["value"], theirs, higher)
        if events is not None and js_events and events != js_events and factor != "–":
            # The exact same-size comparison is the row at the JS client's store size.
            factor += f" (JS at {num(js_events)})"
        add("client", target, measured_of(ours) + unit_note,
            fraction(ours["value"], sqlite_limit) + " of SQLite batched inserts" if workload.startswith("durable_batched") else "–",
            factor, verdict)
        if verdict is None:
            rows[-1] = rows[-1][:5] + ("reported",)

    client_row("commit_memory", "commit + materialize + subscriber notified: p50 ≤ 50 µs, p99 ≤ 500 µs",
               lambda v: v["p50"] <= 50 and v["p99"] <= 500, lambda v: f"p50 {num(v['p50'], 1)} µs, p99 {num(v['p99'], 1)} µs", False)
    client_row("durable_batched_normal", "durable throughput ≥ 200,000 events/s batched (1,000 per commit, default durability)",
               lambda v: v["value"] >= 200_000, lambda v: f"{num(v['value'])} events/s", True)
    client_row("durable_batched_full", "the same with an fsync per commit (`Durability::Full`; no target)",
               lambda v: None, lambda v: f"{num(v['value'])} events/s", True)
    client_row("durable_single_normal", "durable throughput ≥ 10,000 events/s, one event per commit",
               lambda v: v["value"] >= 10_000, lambda v: f"{num(v['value'])} events/s", True)
    for events in client_sizes(run, "cold_start"):
        client_row("cold_start", f"cold start to the first query result ≤ 150 ms at 1,000,000 events ({num(events)} here)",
                   (lambda v: v["value"] <= 150) if events >= 1_000_000 else (lambda v: None),
                   lambda v: f"{num(v['value'], 2)} ms (p99 {num(v['p99'], 2)})", False, events)
    # At the JS client's (small) store size the rows are the exact comparison, not a target: fixed costs (opening,
    # connecting) weigh more there.
    def at_js_size(events):
        return events == js_events and events < 100_000

    for workload, target, floor in (("rebuild", "full rebuild ≥ 200,000 events/s", 200_000),
                                    ("catchup", "catch-up: pull and materialize ≥ 100,000 events/s", 100_000)):
        for events in client_sizes(run, workload):
            small = at_js_size(events)
            client_row(workload, f"{target} ({num(events)} events" + ("; the JS client's size, no target)" if small else ")"),
                       (lambda v: None) if small else (lambda v, floor=floor: v["value"] >= floor),
                       lambda v: f"{num(v['value'])} events/s", True, events)
    client_row("sync_latency", "commit on A → subscription fires on B (loopback): p50 ≤ 2 ms, p99 ≤ 10 ms",
               lambda v: v["p50"] <= 2 and v["p99"] <= 10, lambda v: f"p50 {num(v['p50'], 2)} ms, p99 {num(v['p99'], 2)} ms", False)

    # Signer and object store.
    sha = limits.get("sha256_mb_per_second_one_core")
    http = limits.get("loopback_http_mb_per_second")
    disk_write = limits.get("disk_write_fsync_mb_per_second")
    for fs in ("tmpfs", "disk"):
        entries = objects_runs(run, fs)
        if not entries:
            continue
        store = [entry["result"]["embedded_store"] for entry in entries]
        if fs == "tmpfs" or not objects_runs(run, "tmpfs"):
            one_core = [entry["result"]["signer_in_process_one_core"] for entry in entries]
            rate_one = median([e["signatures_per_second"] for e in one_core])
            p99_one = median([e["latency_p99_ms"] for e in one_core])
            add("object store", "signer ≥ 5,000 signatures/s with p99 ≤ 2 ms on one core",
                f"{num(rate_one)}/s, p99 {num(p99_one, 3)} ms", "–", "–", rate_one >= 5000 and p99_one <= 2)
        size = store[0]["object_bytes"] / 2**20
        put, get = median([e["put_mb_per_second"] for e in store]), median([e["get_mb_per_second"] for e in store])
        low_put, high_put = spread([e["put_mb_per_second"] for e in store])
        low_get, high_get = spread([e["get_mb_per_second"] for e in store])
        full_size = size >= 1024
        limit_put = min(x for x in (sha, http, disk_write if fs == "disk" else None) if x) if sha else None
        add("object store", f"one 1 GiB PUT ≥ 800 MB/s with checksum verification ({num(size)} MiB, {fs} data dir)",
            f"{num(put)} MB/s ({num(low_put)}–{num(high_put)})",
            fraction(put, limit_put) + (" of min(SHA-256, HTTP, disk fsync write)" if fs == "disk" else " of min(SHA-256, HTTP)"),
            "–", put >= 800 if full_size else None)
        add("object store", f"one 1 GiB GET ≥ 800 MB/s, client verifies SHA-256 ({num(size)} MiB, {fs} data dir)",
            f"{num(get)} MB/s ({num(low_get)}–{num(high_get)})", fraction(get, min(x for x in (sha, http) if x) if sha else None)
            + " of min(SHA-256, HTTP)", "–", get >= 800 if full_size else None)
        rss = max(max(e["peak_rss_growth_put_mib"], e["peak_rss_growth_get_mib"]) for e in store)
        add("object store", f"peak RSS growth ≤ 32 MiB while moving a 1 GiB object ({num(size)} MiB, {fs})",
            f"{num(rss, 1)} MiB", "–", "–", rss <= 32)

    # Postgres and nodes: figures without thresholds.
    if run.get("postgres", {}).get("runs"):
        pg_rate = lambda name: median(postgres_values(run, name, lambda r: r["events_per_sec"]))
        pg_p = lambda name, key: median(postgres_values(run, name, lambda r: r["last_delivery"][key]))
        for name, label in (("pg ingest 1 store", "ingest into one store on Postgres (one push in flight)"),
                            ("pg ingest 1 store, 8 in flight", "ingest into one store on Postgres (8 in flight)"),
                            ("pg ingest 100 stores", "ingest across 100 stores on Postgres")):
            value = pg_rate(name)
            sqlite = pg_rate(name.replace("pg", "sqlite"))
            if value is not None:
                add("postgres", f"{label} (no target; reported)", f"{num(value)} events/s (SQLite node: {num(sqlite)})",
                    "–", "–", None)
                rows[-1] = rows[-1][:5] + ("reported",)
        for name, label in (("pg fanout one node", "fan-out to 1,000 subscribers, one node on Postgres"),
                            ("pg fanout two nodes", "fan-out to 1,000 subscribers over two nodes (cross-node)")):
            if pg_p(name, "p50_ms") is not None:
                add("postgres", f"{label} (no target; reported)",
                    f"p50 {num(pg_p(name, 'p50_ms'), 1)} ms, p99 {num(pg_p(name, 'p99_ms'), 1)} ms", "–", "–", None)
                rows[-1] = rows[-1][:5] + ("reported",)

    add_auth_rows(run, add)
    add_events_rows(run, add)

    # File sync.
    for fs in ("tmpfs", "disk"):
        p99 = median(files_values(run, "livestore-rs", "save_1mib", fs, "p99_ms"))
        ours = median(files_values(run, "livestore-rs", "save_1mib", fs, "median_ms"))
        theirs = median(files_values(run, "livestore-filesync-js", "save_1mib", fs, "median_ms"))
        if p99 is not None:
            add("file sync", f"save_file of 1 MiB, durable and resolvable locally: p99 ≤ 5 ms ({fs})",
                f"median {num(ours, 2)} ms, p99 {num(p99, 2)} ms", "–", ratio_text(ours, theirs, False) + " (median)",
                p99 <= 5)
    for fs in ("tmpfs", "disk"):
        hash_ms = median(files_values(run, "livestore-rs", "hash_1mib", fs, "median_ms"))
        hash_js = median(files_values(run, "livestore-filesync-js", "hash_1mib", fs, "median_ms"))
        if hash_ms is not None and hash_js is not None:
            add("file sync", f"SHA-256 of 1 MiB side by side with @livestore-filesync/core ({fs}; no target)",
                f"median {num(hash_ms, 2)} ms", fraction(1.048576 / hash_ms * 1000, sha) + " of SHA-256",
                ratio_text(hash_ms, hash_js, False), None)
            rows[-1] = rows[-1][:5] + ("reported",)
    for fs in ("tmpfs", "disk"):
        sizes = files_values(run, "livestore-rs", "e2e", fs, "bytes")
        if not sizes:
            continue
        up = median(files_values(run, "livestore-rs", "e2e", fs, "upload_mb_s"))
        down = median(files_values(run, "livestore-rs", "e2e", fs, "download_verified_mb_s"))
        save = median(files_values(run, "livestore-rs", "e2e", fs, "save_mb_s"))
        size = sizes[0] / 2**20
        add("file sync", f"one 1 GiB file end to end ≥ 500 MB/s each way ({num(size)} MiB, {fs})",
            f"save {num(save)}, upload {num(up)}, verified download {num(down)} MB/s",
            fraction(min(up, down), sha) + " of SHA-256", "–", (up >= 500 and down >= 500) if size >= 1024 else None)
    for fs in ("tmpfs", "disk"):
        for uploads in (4, 16):
            values = files_values(run, "livestore-rs", f"small_files_{uploads}", fs, "uploaded_files_per_s")
            counts = files_values(run, "livestore-rs", f"small_files_{uploads}", fs, "count")
            if values:
                value = median(values)
                add("file sync", f"10,000 files of 4 KiB ≥ 2,000 files/s uploaded ({num(counts[0])} files, "
                    f"{uploads} uploads at once{', the default' if uploads == 4 else ''}, {fs})",
                    f"{num(value)} files/s", "–", "–", value >= 2000 if counts[0] >= 10_000 else None)
    rss = [e["result"] for e in run.get("files", {}).get("results", []) if e["workload"] == "rss"
           and "skipped" not in e["result"]]
    if rss:
        largest = max(rss, key=lambda r: r["gib"])
        add("file sync", f"peak RSS growth ≤ 32 MiB while moving a 10 GiB file ({largest['gib']} GiB here)",
            f"{num(largest['peak_rss_growth_mib'], 1)} MiB", "–", "–",
            largest["peak_rss_growth_mib"] <= 32 if largest["gib"] >= 10 else None)
    return rows


def auth_values(run, scenario, variant, pick):
    results = run.get("auth", {}).get("results", [])
    return [pick(entry["result"]) for entry in results if entry["scenario"] == scenario and entry["variant"] == variant]


def add_auth_rows(run, add):
    """Identity-provider tokens and hooks: each figure next to the same workload without them, in the same run."""
    rs256 = median(auth_values(run, "connect", "RS256 token from a JWKS", lambda r: r["connections_per_second"]))
    if rs256 is None:
        return
    open_rate = median(auth_values(run, "connect", "no credential (no auth)", lambda r: r["connections_per_second"]))
    add("auth", "connect with a JWKS-verified RS256 token ≥ 5,000/s", f"{num(rs256)} connects/s",
        f"{num(open_rate)} /s without a credential", "–", rs256 >= 5000)
    rtt = lambda variant, key: median(auth_values(run, "push round trip, 1 event", variant,
                                                  lambda r: r["push_round_trip"][key]))
    hooked, plain = rtt("push hook", "p50_ms"), rtt("no hook", "p50_ms")
    add("auth", "push round trip with a loopback push hook adds ≤ 1 ms at p50",
        f"+{num(hooked - plain, 2)} ms (p50 {num(hooked, 2)} vs {num(plain, 2)} ms without)", "–", "–",
        hooked - plain <= 1.0)
    for scenario, label in (("ingest, batches of 100, one push in flight", "one push in flight"),
                            ("ingest, batches of 100, 8 pushes in flight", "8 in flight")):
        with_hook = median(auth_values(run, scenario, "push hook", lambda r: r["events_per_sec"]))
        without = median(auth_values(run, scenario, "no hook", lambda r: r["events_per_sec"]))
        if with_hook is not None and without:
            add("auth", f"ingest with a push hook ≥ 50% of ingest without ({label})",
                f"{num(with_hook)} events/s ({num(100 * with_hook / without)}% of {num(without)})", "–", "–",
                with_hook >= 0.5 * without)


def add_events_rows(run, add):
    for entry in run.get("events", []):
        result = entry["result"]
        storage = result["storage"]
        keeps_up = (result["delivered_events"] == result["events"]
                    and result["delivery_events_per_sec"] >= 0.95 * result["ingest_events_per_sec"])
        target = entry.get("rate", 50_000)
        add("events out", f"webhook delivery keeps up with {num(target)} events/s of ingest ({storage})",
            f"{num(result['delivery_events_per_sec'])} events/s delivered of {num(result['ingest_events_per_sec'])} "
            f"ingested; lag p99 {num(result['lag_events']['p99_while_ingesting'])} events; caught up "
            f"{num(result['catch_up_after_ingest_ms'])} ms after ingest", "–", "–",
            keeps_up and result["ingest_events_per_sec"] >= 0.95 * target)


def auth_table(run):
    return run.get("auth", {}).get("summary_markdown") or "not run"


def events_table(run):
    lines = ["| storage | ingest | delivered | lag p50 / p99 / max (events, while ingesting) | push ack → webhook p50 / p99 | caught up after ingest |",
             "|---|---|---|---|---|---|"]
    for entry in run.get("events", []):
        r = entry["result"]
        latency = r.get("commit_to_webhook_latency") or {}
        lag = r["lag_events"]
        lines.append(f"| {r['storage']} | {num(r['ingest_events_per_sec'])} events/s | {num(r['delivered_events'])} "
                     f"of {num(r['events'])} at {num(r['delivery_events_per_sec'])} events/s | {num(lag['p50_while_ingesting'])} / "
                     f"{num(lag['p99_while_ingesting'])} / {num(lag['max'])} | {num(latency.get('p50_ms'), 1)} / "
                     f"{num(latency.get('p99_ms'), 1)} ms | {num(r['catch_up_after_ingest_ms'])} ms |")
    return "\n".join(lines) if len(lines) > 2 else "not run"


def targets_table(run):
    lines = ["| area | target | measured (median of repetitions) | fraction of the machine's limit | ours vs the JS original | status |",
             "|---|---|---|---|---|---|"]
    for row in targets(run):
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def compare(old, new):
    """Markdown: every target of two runs side by side."""
    old_rows = {(row[0], row[1]): row for row in targets(old)}
    lines = [f"| area | target | {old.get('date', 'old')} | {new.get('date', 'new')} | status then → now |",
             "|---|---|---|---|---|"]
    for row in targets(new):
        before = old_rows.get((row[0], row[1]))
        lines.append(f"| {row[0]} | {row[1]} | {before[2] if before else '–'} | {row[2]} | "
                     f"{before[5] if before else '–'} → {row[5]} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# per-area tables


def limits_table(run):
    limits = run["limits"]
    floor = limits["loopback_fanout_1000_last_delivery_ms"]
    rows = [
        ("SHA-256, one core", f"{num(limits['sha256_mb_per_second_one_core'])} MB/s"),
        ("loopback TCP, one stream", f"{num(limits['loopback_tcp_mb_per_second'])} MB/s"),
        ("loopback HTTP/1.1, one streamed body (axum → reqwest)", f"{num(limits.get('loopback_http_mb_per_second'))} MB/s"),
        ("sequential write + fsync on the data disk (256 MiB)", f"{num(limits.get('disk_write_fsync_mb_per_second'))} MB/s"),
        ("SQLite WAL `synchronous=FULL`, 1,000-row transactions of event-shaped rows",
         f"{num(limits['sqlite_wal_full_inserts_per_second_batched_1000'])} rows/s"),
        ("fsync round trips on the data disk", f"{num(limits['fsyncs_per_second'])} /s"),
        ("loopback fan-out floor: 1,000 plain sockets, last delivery",
         f"p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms"),
    ]
    return "| limit | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def sync_table(run):
    results = run.get("sync", {}).get("results", [])
    lines = ["| workload | livestore-rs, median (range) | reference, median (range) | ours faster by | p99 ours / reference |",
             "|---|---|---|---|---|"]
    for scenario in dict.fromkeys(entry["scenario"] for entry in results):
        cells, headline = [], {}
        for server in ("livestore-rs", "sync-cf-reference"):
            kind = next((e["result"]["scenario"] for e in results if e["scenario"] == scenario and e.get("result")), None)
            if kind in ("ingest", "backlog"):
                values = sync_values(run, scenario, server, lambda r: r["events_per_sec"])
                p99 = median(sync_values(run, scenario, server, lambda r: r["push_round_trip"]["p99_ms"])) if kind == "ingest" else None
                low, high = spread(values)
                headline[server] = (median(values), True)
                cells.append("–" if not values else f"{num(median(values))} events/s ({num(low)}–{num(high)})")
                headline[server + "p99"] = p99
            elif kind == "fanout":
                values = sync_values(run, scenario, server, lambda r: r["last_delivery"]["p50_ms"])
                low, high = spread(values)
                headline[server] = (median(values), False)
                headline[server + "p99"] = median(sync_values(run, scenario, server, lambda r: r["last_delivery"]["p99_ms"]))
                cells.append("–" if not values else f"last delivery p50 {num(median(values), 1)} ms ({num(low, 1)}–{num(high, 1)})")
            elif kind == "idle":
                values = sync_values(run, scenario, server, lambda r: (r["server_rss_after_mib"], r["server_rss_per_connection_kib"]))
                headline[server] = (None, False)
                cells.append("–" if not values else f"{num(values[0][0])} MiB server RSS ({num(values[0][1], 1)} KiB per connection)")
            else:
                cells.append("–")
        ours, theirs = headline.get("livestore-rs", (None, True)), headline.get("sync-cf-reference", (None, True))
        p99 = " / ".join("–" if headline.get(s + "p99") is None else f"{num(headline[s + 'p99'], 1)} ms"
                         for s in ("livestore-rs", "sync-cf-reference"))
        lines.append(f"| {scenario} | {cells[0]} | {cells[1]} | {ratio_text(ours[0], theirs[0], ours[1])} | {p99} |")
    return "\n".join(lines)


def objects_table(run):
    lines = ["| workload | data dir | median (range) | p99 | fraction of limit |", "|---|---|---|---|---|"]
    limits = run.get("limits", {})
    sha, http = limits.get("sha256_mb_per_second_one_core"), limits.get("loopback_http_mb_per_second")
    for fs in ("disk", "tmpfs"):
        entries = [entry["result"] for entry in objects_runs(run, fs)]
        if not entries:
            continue
        store = [e["embedded_store"] for e in entries]
        size = store[0]["object_bytes"] / 2**20
        for label, key in (("signatures/s in process, one core", "signer_in_process_one_core"),
                           ("signatures/s over loopback HTTP, 8 concurrent clients", "signer")):
            values = [e[key]["signatures_per_second"] for e in entries]
            low, high = spread(values)
            lines.append(f"| {label} | {fs} | {num(median(values))}/s ({num(low)}–{num(high)}) | "
                         f"{num(median([e[key]['latency_p99_ms'] for e in entries]), 3)} ms | – |")
        for label, key in ((f"PUT of {num(size)} MiB, SHA-256 and length verified, fsynced", "put_mb_per_second"),
                           (f"GET of {num(size)} MiB, client verifies SHA-256", "get_mb_per_second")):
            values = [e[key] for e in store]
            low, high = spread(values)
            lines.append(f"| {label} | {fs} | {num(median(values))} MB/s ({num(low)}–{num(high)}) | – | "
                         f"{fraction(median(values), sha)} of SHA-256, {fraction(median(values), http)} of HTTP |")
        lines.append(f"| peak RSS growth, PUT / GET | {fs} | {num(max(e['peak_rss_growth_put_mib'] for e in store), 1)} / "
                     f"{num(max(e['peak_rss_growth_get_mib'] for e in store), 1)} MiB | – | – |")
    memory = run.get("objects_memory", [])
    if memory:
        lines.append("")
        lines.append("Memory against object size (peak RSS growth of the server process, PUT / GET): " + "; ".join(
            f"{num(entry['size_mib'])} MiB: {num(entry['put_mib'], 1)} / {num(entry['get_mib'], 1)} MiB" for entry in memory) + ".")
    return "\n".join(lines)


def client_table(run):
    client = run.get("client", {})
    return client.get("summary_markdown", "not run")


def files_table(run):
    return run.get("files", {}).get("summary_markdown", "not run")


# ---------------------------------------------------------------------------------------------------------------
# charts


def short_label(target):
    """A target's workload without its threshold, plus its trailing qualifier: `full rebuild (1,000,000 events)`."""
    import re
    main = re.split(r" ≥| ≤|: p50| \(", target)[0]
    qualifier = re.findall(r"\(([^()]*)\)\s*$", target)
    return main + (f" ({qualifier[0][:32]})" if qualifier else "")


def charts(run, out_dir):
    """SVG and PNG charts; returns the SVG paths (empty when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(out_dir, exist_ok=True)
    made = []

    def save(figure, name):
        path = os.path.join(out_dir, name)
        figure.tight_layout()
        figure.savefig(path)
        figure.savefig(path[:-4] + ".png", dpi=110)
        made.append(path)

    results = run.get("sync", {}).get("results", [])
    # 1. Fan-out latency distributions, ours vs the reference.
    scenarios = [s for s in dict.fromkeys(e["scenario"] for e in results) if s.startswith("fan-out")]
    if scenarios:
        figure, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
        for axis, scenario in zip(axes[0], scenarios):
            for position, (server, colour) in enumerate((("livestore-rs", "tab:blue"), ("sync-cf-reference", "tab:orange"))):
                stats = sync_values(run, scenario, server, lambda r: r["last_delivery"])
                if stats:
                    axis.bxp([{"med": median([s["p50_ms"] for s in stats]), "q1": median([s["p50_ms"] for s in stats]),
                               "q3": median([s["p90_ms"] for s in stats]), "whislo": min(s["min_ms"] for s in stats),
                               "whishi": median([s["p99_ms"] for s in stats]), "fliers": [max(s["max_ms"] for s in stats)],
                               "label": server}], positions=[position], widths=0.5, patch_artist=True,
                             boxprops={"facecolor": colour}, showfliers=True)
            axis.set_yscale("log")
            axis.set_ylabel("last delivery, ms (log scale)")
            axis.set_title(scenario)
        figure.suptitle("box p50–p90, whiskers min–p99, dot max (medians of the repetitions)", fontsize=9)
        save(figure, "fanout-latency.svg")
    # 2. Client latencies, ours vs LiveStore JS.
    client_workloads = [("commit_memory", "commit + notify (µs)"), ("sync_latency", "A commits → B notified (ms)")]
    if run.get("client", {}).get("results"):
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for axis, (workload, title) in zip(axes, client_workloads):
            for offset, (client, colour) in enumerate((("livestore-rs", "tab:blue"), ("livestore-js", "tab:orange"))):
                p50 = median(client_values(run, client, workload, "p50"))
                p99 = median(client_values(run, client, workload, "p99"))
                if p50 is not None:
                    axis.bar([offset * 0.4, 1 + offset * 0.4], [p50, p99], width=0.4, color=colour, label=client)
            axis.set_xticks([0.2, 1.2], ["p50", "p99"])
            axis.set_yscale("log")
            axis.set_title(title)
            axis.legend()
        save(figure, "client-latency.svg")
    # 3. Ingest throughput against batch size.
    sweep = sorted((int(e["scenario"].rsplit(" ", 1)[1]), e["result"]["events_per_sec"]) for e in results
                   if e["scenario"].startswith("ingest sweep") and e.get("result") and e["server"] == "livestore-rs")
    if sweep:
        figure, axis = plt.subplots(figsize=(6, 4))
        batches = sorted({batch for batch, _ in sweep})
        axis.plot(batches, [median([rate for b, rate in sweep if b == batch]) for batch in batches], "o-",
                  label="livestore serve, one push in flight")
        limit = run.get("limits", {}).get("sqlite_wal_full_inserts_per_second_batched_1000")
        if limit:
            axis.axhline(limit, linestyle="--", color="grey", label="SQLite batched insert limit")
        reference = median(sync_values(run, sync_scenario(run, "ingest, 1 store, batches of 100, one push"),
                                       "sync-cf-reference", lambda r: r["events_per_sec"]))
        if reference:
            axis.plot([100], [reference], "s", color="tab:orange", label="reference worker, batch 100")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("events per push")
        axis.set_ylabel("events/s into one store")
        axis.set_title("Push ingest against batch size")
        axis.legend()
        save(figure, "ingest-vs-batch.svg")
    # 4. Memory against size: object store and file sync.
    memory = run.get("objects_memory", [])
    rss = sorted((e["result"]["gib"] * 1024, e["result"]["peak_rss_growth_mib"]) for e in run.get("files", {}).get("results", [])
                 if e["workload"] == "rss" and "skipped" not in e["result"])
    if memory or rss:
        figure, axis = plt.subplots(figsize=(6, 4))
        if memory:
            axis.plot([m["size_mib"] for m in memory], [m["put_mib"] for m in memory], "o-", label="object store PUT")
            axis.plot([m["size_mib"] for m in memory], [m["get_mib"] for m in memory], "s-", label="object store GET")
        if rss:
            axis.plot([size for size, _ in rss], [mib for _, mib in rss], "^-", label="file sync client (save, upload, download)")
        axis.axhline(32, linestyle="--", color="grey", label="32 MiB budget")
        axis.set_xscale("log")
        axis.set_xlabel("size moved, MiB (log)")
        axis.set_ylabel("peak RSS growth, MiB")
        axis.set_ylim(bottom=0)
        axis.set_title("Memory does not grow with size")
        axis.legend()
        save(figure, "memory-vs-size.svg")
    # 5. Ratios at a glance.
    ratios = []
    for row in targets(run):
        versus = row[4]
        if versus.endswith(")"):
            versus = versus.split(" ")[0]
        if versus.endswith("×"):
            ratios.append((f"{row[0]}: {short_label(row[1])}", float(versus[:-1].replace(",", ""))))
    if ratios:
        figure, axis = plt.subplots(figsize=(9, 0.45 * len(ratios) + 1))
        axis.barh([label for label, _ in ratios], [value for _, value in ratios], color="tab:blue")
        axis.set_xscale("log")
        axis.axvline(1, color="grey")
        axis.set_xlabel("ours faster by (×, log), same workload, same run")
        axis.invert_yaxis()
        axis.tick_params(axis="y", labelsize=7)
        save(figure, "ratios.svg")
    plt.close("all")
    return made
