"""``bench.json`` → ``bench.md``: the benchmark's figures as markdown tables, side by side. Data only; the
reading of them belongs in a note written by a person."""

from __future__ import annotations

from typing import Any

from service.capacity import choose


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def _pct(value: float | None, decimals: int = 0) -> str:
    """A share in per cent; against a goal with one decimal, which tells 89.6 % (missed) from 90 % (met)."""
    return "–" if value is None else f"{100 * value:.{decimals}f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def header(report: dict[str, Any]) -> list[str]:
    m, model = report["machine"], report["model"]
    load_start = ", ".join(f"{v:.1f}" for v in m["load_average_at_start"])
    load_end = ", ".join(f"{v:.1f}" for v in m.get("load_average_at_end", []))
    placeholder = " — **placeholder model, not the trained one**" if model["placeholder"] else ""
    levels = [*report["service"]["batching_on"], *report["service"]["batching_off"]]
    others = [r["cpu"]["other_processes_cores"] for r in levels if "other_processes_cores" in r["cpu"]]
    others_mean = sum(others) / len(others) if others else None
    return [
        f"# gan-bench: {model['name']} {model['version']}{placeholder}",
        "",
        f"- command: `{report['command']}` (started {report['started']})",
        f"- machine: {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']} ({', '.join(m['providers'])})",
        *([f"- **{report['note']}**"] if report.get("note") else []),
        f"- other processes on this machine used {_f(others_mean, 2)} of its {m['cpu_count']} cores on "
        "average during the load levels; load average (1, 5, 15 min) at start "
        f"{load_start}, at end {load_end}",
        f"- model sha256 `{model['sha256']}`, latent_dim {model['latent_dim']}, image_shape "
        f"{model['image_shape']}",
        f"- service settings: {report['service_settings']} (everything else as shipped)",
        "",
    ]


TARGET_NAMES = {
    "vs_naive_at_64": ("single-image req/s at 64 clients ≥ 1.5 × the naive peer's", "×"),
    "vs_naive_at_8": ("single-image req/s at 8 clients ≥ 1.0 × the naive peer's", "×"),
    "single_share_of_limit": ("single-image req/s at 64 clients ≥ 80 % of the composed limit", "%"),
    "single_p99_ms": ("p99 at 64 clients < 100 ms", "ms"),
    "bulk_share_of_peak_ort": (
        "bulk (/v1/bulk) ≥ 90 % of raw ORT images/s run as the bulk path runs it (as many concurrent calls "
        "as the service's bulk streams; timed either side of each pull: the median pull's ratio)",
        "%",
    ),
}


def _measured(value: float | None, unit: str) -> str:
    if unit == "%":
        return _pct(value, 1)
    return _f(value, 2, "×") if unit == "×" else _f(value, 0, " ms")


def targets(report: dict[str, Any]) -> list[str]:
    c = report["composed"]
    if "targets" not in c:
        return ["## Targets", "", c.get("note", ""), ""]
    rows = []
    for key, t in c["targets"].items():
        name, unit = TARGET_NAMES.get(key, (key, ""))
        rows.append([name, _measured(t["measured"], unit), "yes" if t["met"] else "**no**"])
    table = _table(["target", "measured", "met"], rows)
    return ["## Targets (issue #16; reported, not asserted)", "", *table, ""]


# what each framework peer gan-bench drives is, for the sentence under the peers table
PEER_DESCRIPTIONS = {
    "LitServe": "The LitServe peer is `loadtest.litserve_peer`: LitServe's own batching (max_batch_size 64, "
    "batch_timeout 2 ms), one ONNX Runtime session (one intra-op thread) in its inference worker process, "
    "the service's PNG encoder; its CPU counts every process of the server.",
    "Ray Serve": "The Ray Serve peer is `loadtest.ray_peer`: one replica with `@serve.batch` (max_batch_size "
    "64, batch_wait_timeout_s 2 ms, max_ongoing_requests 64) behind Ray Serve's HTTP proxy, in a local Ray "
    "cluster of one CPU, one ONNX Runtime session (one intra-op thread) in the replica, the service's PNG "
    "encoder; its CPU counts every process of the cluster (GCS, raylet, agents, controller, proxy, replica).",
}


def peers(report: dict[str, Any]) -> list[str]:
    """Single-image POST /generate on every server, level by level (the service's and the naive server's
    levels ran interleaved, each framework peer's after them, on its own)."""
    p = report.get("peers")
    if not p:
        return []
    on = {r["concurrency"]: r for r in report["service"]["batching_on"]}
    off = {r["concurrency"]: r for r in report["service"]["batching_off"]}
    naive = {r["concurrency"]: r for r in p["naive"]}
    frameworks = [f for f in p["frameworks"] if "levels" in f]  # those gan-bench drove
    measured = {f["name"]: {r["concurrency"]: r for r in f["levels"]} for f in frameworks}
    rows = []
    for concurrency in sorted(on):
        base = naive.get(concurrency, {}).get("rps")
        for name, level in (
            ("gan-serve (dynamic batching)", on.get(concurrency)),
            ("gan-serve, max_batch=1", off.get(concurrency)),
            ("naive FastAPI (sync route, batch-1 ORT)", naive.get(concurrency)),
            *((f"{name} (its own batching)", by.get(concurrency)) for name, by in measured.items()),
        ):
            if level is None:
                continue
            rows.append(
                [
                    str(concurrency),
                    name,
                    _f(level["rps"]),
                    _f(level["p50_ms"]),
                    _f(level["p99_ms"]),
                    _f(level.get("server_cpu_ms_per_request"), 3),
                    _f(level["rps"] / base if base else None, 2, "×"),
                    str(level["errors"]),
                ]
            )
        rows += [
            [str(concurrency), f["name"], f["status"], "", "", "", "", ""]
            for f in p["frameworks"]
            if f["name"] not in measured
        ]
    head = ["clients", "server", "req/s", "p50 ms", "p99 ms", "CPU ms/answer", "vs naive", "errors"]
    return [
        "## Peers: single-image POST /generate on the same model",
        "",
        "The service's and the naive server's levels ran interleaved; each framework peer's after them, "
        "with only that peer started.",
        "",
        *_table(head, rows),
        "",
        "*CPU ms/answer* is the server process's CPU time (every thread) per answer. The naive peer is "
        "`loadtest.naive_server`: FastAPI, a sync route run in Starlette's thread pool, one batch-1 ONNX "
        "Runtime call (one intra-op thread) and one `Image.save` PNG per request."
        + "".join(f" {text}" for name, text in PEER_DESCRIPTIONS.items() if name in measured),
        "",
    ]


def balance(cores: int, service_ms: float, model_ms: float) -> list[str]:
    """The balance line: the Python work per answer (the service's CPU less the model's) beside the model's,
    and what ``GAN_WORKERS=auto`` (service.capacity) runs with them on this machine."""
    request_ms = service_ms - model_ms
    if request_ms <= 0:
        return []
    chosen = choose(cores, request_ms, model_ms)
    return [
        f"- balance: {_f(request_ms, 3)} CPU ms of Python per answer (the service's less the model's) "
        f"against {_f(model_ms, 3)} ms of model per image: `GAN_WORKERS=auto` with `GAN_REQUEST_CPU_MS="
        f"{request_ms:.2f}` runs {chosen.workers} worker(s) × {chosen.threads} thread(s) on these "
        f"{cores} cores"
    ]


def composed(report: dict[str, Any]) -> list[str]:
    c = report["composed"]
    if "limit" not in c:
        return []
    limit, fw = c["limit"], report["framework"]
    level = next(r for r in report["service"]["batching_on"] if r["concurrency"] == c["concurrency"])
    histogram = ", ".join(f"≤{k}: {v:g}" for k, v in level["server"]["batch_histogram"].items())
    shares = limit["shares"]
    cpu = c["cpu"]["parts"]
    max_batch = report["service_settings"]["max_batch"]
    rows = [
        [
            "framework (trivial FastAPI route, same uvicorn setup)",
            _f(1000 * limit["framework_s"], 3),
            _f(1000 * cpu["framework_s"], 3),
            _pct(shares["framework"]),
            f"{_f(fw['trivial_route']['rps'])} req/s at {c['concurrency']} clients",
        ],
        [
            f"model (ORT {c.get('model_reference') or c.get('ort_reference', 'CPU')}, per image at batch "
            f"{max_batch})",
            _f(1000 * limit["model_s"], 3),
            _f(1000 * cpu["model_s"], 3),
            _pct(shares["model"]),
            f"at the batch sizes formed ({histogram}; each timed at its bucket's bound, which a batch on the "
            f"CPU, unpadded, may be under): {_f(1000 * c['model_s_at_formed_batches'], 3)} ms",
        ],
        [
            f"PNG encoding (one encode's time over {c.get('cores', 1)} cores)",
            _f(1000 * limit["png_s"], 3),
            _f(1000 * cpu["png_s"], 3),
            _pct(shares["png"]),
            f"service.encoding.png_response, {_f(report['encoding']['png_ms_per_image'], 3)} ms an image",
        ],
        [
            "**sum → composed limit**",
            _f(1000 * limit["seconds_per_request"], 3),
            _f(1000 * cpu["seconds_per_request"], 3),
            "100 %",
            f"**{_f(limit['rps'])} req/s**",
        ],
    ]
    healthz = fw.get("service_healthz", {})
    return [
        f"## Composed limit of single-image requests ({c['concurrency']} clients)",
        "",
        "Each part alone with every core on it, as the service runs it: the trivial route's ceiling under "
        "the same load, the model in as many concurrent calls as the service's inference streams, PNG "
        "encoding spread over the cores. *CPU ms per request* is the same parts in CPU time, one call or "
        "encode at a time.",
        "",
        *_table(["part", "ms per request", "CPU ms per request", "share (ms)", "measured as"], rows),
        "",
        f"- service measured: **{_f(c['service_rps'])} req/s = {_pct(c['share_of_limit'])} of the limit**, "
        f"p99 {_f(c['service_p99_ms'], 0)} ms; with batching off the ratio batching on/off is "
        f"{_f(c['batching_ratio'], 2)}×",
        f"- not in the limit (issue #16's definition): latent sampling, "
        f"{_f(c.get('latent_ms_per_request'), 3)} ms per request alone",
        f"- the service's own cheapest route (GET /healthz: framework + request-id/metrics/access-log "
        f"middleware, no model) answers {_f(healthz.get('rps'))} req/s at {c['concurrency']} clients "
        f"({_f(healthz.get('server_cpu_ms_per_request'), 3)} server CPU ms each), against "
        f"{_f(fw['trivial_route']['rps'])} for the trivial route "
        f"({_f(fw['trivial_route'].get('server_cpu_ms_per_request'), 3)} ms); a single-image POST /generate "
        f"costs {_f(level.get('server_cpu_ms_per_request'), 3)} server CPU ms",
        f"- CPU view (steady on a shared machine): the service spends "
        f"{_f(c['cpu']['service_ms_per_request'], 3)} CPU ms per single-image answer, the parts alone "
        f"{_f(1000 * cpu['seconds_per_request'], 3)} ms ({_pct(c['cpu']['parts_share_of_service'])}); the "
        "rest is the service's own per-request work (event loop, thread hand-offs, latent sampling)",
        *balance(report["machine"]["cpu_count"], c["cpu"]["service_ms_per_request"], 1000 * cpu["model_s"]),
        f"- in-service inference time per image at this level: "
        f"{_f(level['server']['inference_ms_per_image'], 3)} ms (measured by the batcher, under load, "
        "including latent sampling and encoding where the batch runs) vs "
        f"{_f(1000 * cpu['model_s'], 3)} ms for one call at batch {max_batch} alone",
        "",
    ]


def levels(report: dict[str, Any]) -> list[str]:
    on = report["service"]["batching_on"]
    off = {r["concurrency"]: r for r in report["service"]["batching_off"]}
    rows = []
    for r in on:
        o, cpu = off.get(r["concurrency"], {}), r["cpu"]
        rows.append(
            [
                str(r["concurrency"]),
                _f(r["rps"]),
                _f(r["p50_ms"]),
                _f(r["p99_ms"]),
                _f(r["server"]["mean_batch"]),
                _f(r.get("server_cpu_ms_per_request"), 2),
                _f(o.get("rps")),
                _f(o.get("p50_ms")),
                _f(o.get("p99_ms")),
                _f(o.get("server_cpu_ms_per_request"), 2),
                _f(r["rps"] / o["rps"] if o.get("rps") else None, 2),
                f"{r['errors']} / {o.get('errors', '–')}",
                " / ".join(
                    _f(cpu.get(k), 2) for k in ("server_event_loop_cores", "server_other_threads_cores")
                ),
                _f(cpu.get("client_cores"), 2),
                _f(cpu.get("other_processes_cores"), 2),
            ]
        )
    head = [
        "clients",
        "on: req/s",
        "p50 ms",
        "p99 ms",
        "mean batch",
        "CPU ms/req",
        "off: req/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/req",
        "on/off req/s",
        "errors on/off",
        "server cores: loop / other (on)",
        "load-gen cores (on)",
        "other procs cores (on)",
    ]
    return [
        "## Single-image POST /generate: dynamic batching on vs off (max_batch=1)",
        "",
        *_table(head, rows),
        "",
        "Cores are averages over the window (1.0 = one core busy): *loop* is the main thread of every "
        "server process (uvicorn's event loop in each worker), *other* their other threads (ONNX Runtime's "
        "pool, the encoding thread pool), *other procs* everything on the machine besides this server and "
        "the load generator. *CPU ms/req* is the server's CPU time per answer, steadier than req/s when "
        "other jobs take cores.",
        "",
    ]


def ort(report: dict[str, Any]) -> list[str]:
    cpu = report["ort"]["cpu"]
    threads = list(cpu)
    sizes = sorted({size for sweep in cpu.values() for size in sweep}, key=int)
    columns = (
        ("ms_per_batch", "ms/batch", 2),
        ("images_per_s", "img/s", 0),
        ("cpu_ms_per_batch", "CPU ms", 2),
    )
    head = ["batch"] + [f"threads={t}: {unit}" for t in threads for _, unit, _ in columns]
    rows = [
        [size] + [_f(cpu[t].get(size, {}).get(key), digits) for t in threads for key, _, digits in columns]
        for size in sizes
    ]
    return [
        "## Raw ONNX Runtime throughput (CPU, median call)",
        "",
        "threads = intra_op_num_threads (0: the service's default for GAN_INTRA_OP_THREADS=0, one thread on "
        "machines with at most 2 cores, else cores / workers). *CPU ms* is the CPU time of one call over all "
        "threads: above the wall time "
        "when threads work in parallel or spin-wait.",
        "",
        *_table(head, rows),
        "",
    ]


def bulk(report: dict[str, Any]) -> list[str]:
    c = report["composed"]
    peak, at_max = c.get("ort_peak_images_per_s"), c.get("ort_images_per_s_at_max_batch")
    same = c.get("bulk_ort_peak_images_per_s") or peak
    rows = [
        [
            name,
            _f(b["images_per_s"], 0),
            _pct(b["images_per_s"] / same if same else None),
            _pct(b["images_per_s"] / peak if peak else None),
            _pct(b["images_per_s"] / at_max if at_max else None),
            str(b["errors"]),
        ]
        for name, b in report["bulk"].items()
    ]
    head = ["request", "images/s", "of ORT run as the bulk path", "of one call's peak"]
    head += ["of one call at max_batch"]
    return [
        "## Bulk delivery (images/s received by one client)",
        "",
        f"Raw ORT on the service's own device: one call at a time ({c.get('ort_reference', 'CPU')}, peak "
        f"{_f(peak, 0)} images/s), and run as the bulk path runs it "
        f"({c.get('bulk_ort_reference', 'the same')}, peak {_f(same, 0)} images/s: the target's reference).",
        "",
        *_table([*head, "errors"], rows),
        "",
        *_pull_ratios(c),
    ]


def _pull_ratios(c: dict[str, Any]) -> list[str]:
    ratios = c.get("bulk_pull_ratios")
    if not ratios:
        return []
    each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    median = c["targets"]["bulk_share_of_peak_ort"]["measured"]  # the ratios' median (benchmark.compose)
    return [
        f"Each `/v1/bulk` pull over the reference timed just before and after it: {each}; the median, "
        f"{_pct(median, 1)}, is the target's figure (the machine's speed moves between pulls).",
        "",
    ]


def gpu(report: dict[str, Any]) -> list[str]:
    g = report["ort"]["gpu"]
    if not g.get("available"):
        return ["## GPU", "", g.get("note", "no GPU available"), ""]
    lines = ["## GPU (CUDA provider)", ""]
    for label in ("fp32", "fp16"):
        data = g.get(label, {})
        if "note" in data:
            lines += [f"- {label}: {data['note']}"]
            continue
        rows = [[size, _f(r["ms_per_batch"], 3), _f(r["images_per_s"], 0)] for size, r in data.items()]
        lines += [f"### {label}", "", *_table(["batch", "ms/batch", "img/s"], rows), ""]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    parts = [header, targets, peers, composed, levels, ort, bulk, gpu]
    return "\n".join(line for part in parts for line in part(report)) + "\n"
