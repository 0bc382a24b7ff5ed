"""``bench.json`` → ``bench.md``: the benchmark's figures as markdown tables, side by side. Data only; the
reading of them belongs in a note written by a person."""

from __future__ import annotations

from typing import Any


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


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


def targets(report: dict[str, Any]) -> list[str]:
    c = report["composed"]
    if "targets" not in c:
        return ["## Targets", "", c.get("note", ""), ""]
    t = c["targets"]
    rows = [
        [
            f"single-image POST /generate at {c['concurrency']} clients ≥ 80 % of the composed limit",
            _pct(t["single_share_of_limit"]["measured"]),
            "yes" if t["single_share_of_limit"]["met"] else "**no**",
        ],
        [
            f"p99 at {c['concurrency']} clients < 250 ms",
            _f(t["single_p99_ms"]["measured"], 0, " ms"),
            "yes" if t["single_p99_ms"]["met"] else "**no**",
        ],
        [
            "bulk (/v1/bulk) ≥ 70 % of raw ORT images/s (peak over batch sizes)",
            _pct(t["bulk_share_of_peak_ort"]["measured"]),
            "yes" if t["bulk_share_of_peak_ort"]["met"] else "**no**",
        ],
    ]
    return ["## Targets (reported, not asserted)", "", *_table(["target", "measured", "met"], rows), ""]


def composed(report: dict[str, Any]) -> list[str]:
    c = report["composed"]
    if "limit" not in c:
        return []
    limit, fw = c["limit"], report["framework"]
    level = next(r for r in report["service"]["batching_on"] if r["concurrency"] == c["concurrency"])
    histogram = ", ".join(f"≤{k}: {v:g}" for k, v in level["server"]["batch_histogram"].items())
    shares = limit["shares"]
    cpu = c["cpu"]["parts"]
    rows = [
        [
            "framework (trivial FastAPI route, same uvicorn setup)",
            _f(1000 * limit["framework_s"], 3),
            _f(1000 * cpu["framework_s"], 3),
            _pct(shares["framework"]),
            f"{_f(fw['trivial_route']['rps'])} req/s at {c['concurrency']} clients",
        ],
        [
            f"model (ORT {c.get('ort_reference', 'CPU')}, batch sizes the batcher formed)",
            _f(1000 * limit["model_s"], 3),
            _f(1000 * cpu["model_s"], 3),
            _pct(shares["model"]),
            f"batches per padded size {histogram}",
        ],
        [
            "PNG encoding",
            _f(1000 * limit["png_s"], 3),
            _f(1000 * cpu["png_s"], 3),
            _pct(shares["png"]),
            "service.encoding.png_response",
        ],
        [
            "latent sampling",
            _f(1000 * limit["latent_s"], 3),
            _f(1000 * cpu["latent_s"], 3),
            _pct(shares["latent"]),
            "contracts.latents",
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
        *_table(["part", "ms per request", "CPU ms per request", "share (ms)", "measured as"], rows),
        "",
        f"- service measured: **{_f(c['service_rps'])} req/s = {_pct(c['share_of_limit'])} of the limit**, "
        f"p99 {_f(c['service_p99_ms'], 0)} ms; with batching off the ratio batching on/off is "
        f"{_f(c['batching_ratio'], 2)}×",
        f"- the service's own cheapest route (GET /healthz: framework + request-id/metrics/access-log "
        f"middleware, no model) answers {_f(healthz.get('rps'))} req/s at {c['concurrency']} clients "
        f"({_f(healthz.get('server_cpu_ms_per_request'), 3)} server CPU ms each), against "
        f"{_f(fw['trivial_route']['rps'])} for the trivial route "
        f"({_f(fw['trivial_route'].get('server_cpu_ms_per_request'), 3)} ms); a single-image POST /generate "
        f"costs {_f(level.get('server_cpu_ms_per_request'), 3)} server CPU ms",
        f"- CPU view (steady on a shared machine): the service spends "
        f"{_f(c['cpu']['service_ms_per_request'], 3)} CPU ms per single-image answer, the parts alone "
        f"{_f(1000 * cpu['seconds_per_request'], 3)} ms ({_pct(c['cpu']['parts_share_of_service'])}); the "
        "rest is the service's own per-request work (event loop, thread hand-offs, ORT's thread pool)",
        f"- in-service inference time per image at this level: "
        f"{_f(level['server']['inference_ms_per_image'], 3)} ms (measured by the batcher, under load) vs "
        f"{_f(1000 * limit['model_s'], 3)} ms alone",
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
        "Cores are averages over the window (1.0 = one core busy): *loop* is the server's main thread "
        "(uvicorn's event loop), *other* its other threads (ONNX Runtime's pool, the encoding thread pool), "
        "*other procs* everything on the machine besides this server and the load generator. *CPU ms/req* is "
        "the server's CPU time per answer, steadier than req/s when other jobs take cores.",
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
    rows = [
        [
            name,
            _f(b["images_per_s"], 0),
            _pct(b["images_per_s"] / peak if peak else None),
            _pct(b["images_per_s"] / at_max if at_max else None),
            str(b["errors"]),
        ]
        for name, b in report["bulk"].items()
    ]
    return [
        "## Bulk delivery (images/s received by one client)",
        "",
        f"Shares are of raw ORT on the service's own device ({c.get('ort_reference', 'CPU')}).",
        "",
        *_table(["request", "images/s", "of ORT peak", "of ORT at max_batch", "errors"], rows),
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
    parts = [header, targets, composed, levels, ort, bulk, gpu]
    return "\n".join(line for part in parts for line in part(report)) + "\n"
