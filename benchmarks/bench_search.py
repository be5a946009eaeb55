"""Image search speed: index build vs `vlkit embed`, query latency of FAISS indexes, and a load
test of the web server.

    python benchmarks/bench_search.py build [--images 600] [--image-size 64] [--model FOLDER] [--json OUT]
    python benchmarks/bench_search.py query [--sizes 10000 100000 1000000] [--dim 512] [--json OUT]
    python benchmarks/bench_search.py load [--clients 20] [--seconds 20]

``build``: images/s of `vlkit index build` (its default data workers, and ``--workers`` counts)
and of `vlkit embed` on the same folder of shape images (64 pixels, a random clip-tiny unless
--model), each run in-process, interleaved, median of ``--repeats``; the ratio build/embed (>= 1
means the build is not slower), of the medians and paired by round (the median of each round's
embed time over its build time: the two ran within the same minute, so under a changing load
this ratio is the steadier one).
``query``: random unit vectors (D=512), uniform and clustered; flat (exact), HNSW and IVF, the
ANN indexes tuned at build time to recall@10 0.95 (``vlkit index build --ann-recall``): build time
(tuning included), p50/p95 latency of fresh queries one at a time (the web server's case),
recall@10 of fresh queries against exact search (the exact top-10 by FAISS's chunked matrix
products), and the speed-up of p50 over flat. ``--json`` also writes every row, with the
machine and its load average, rewritten after each row (a stopped run keeps what it measured).
``load``: `vlkit serve` in a subprocess on 127.0.0.1 over an index of ``--images`` shapes; N client
threads send text queries (GET) and image uploads (POST) in turn for S seconds: requests/s,
p50/p95 per kind, and the errors (non-200 answers).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def shape_folder(folder: Path, count: int, size: int = 64) -> Path:
    from vlkit.data.synthetic import ShapesDataset

    data = ShapesDataset("validation", size=count, image_size=size)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data.image(i).save(folder / f"{i:05d}.png")
    return folder


def tiny_model(folder: Path) -> str:
    import torch

    import vlkit

    torch.manual_seed(0)
    vlkit.create_model("clip-tiny").save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------------------- build
def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the data workers)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_build(args) -> None:
    from vlkit.cli import main
    from vlkit.search.build import auto_workers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "clip")
        images = shape_folder(tmp / "images", args.images, args.image_size)
        common = ["--model", model, "--images", str(images), "--device", "cpu", "--batch-size", str(args.batch_size)]
        runs = {"vlkit embed": ["embed"], "index build (auto workers)": ["index", "build"]}
        runs.update({f"index build --workers {w}": ["index", "build", "--workers", str(w)] for w in args.workers})
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}  # this process and its reaped workers
        for r in range(args.repeats):  # interleaved: every command once per round, the order rotating
            names = list(runs)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                out = tmp / f"out-{len(seconds[name])}-{name.replace(' ', '_')}"
                t0, c0 = time.perf_counter(), _cpu_seconds()
                main([*runs[name], *common, "--out", str(out)])
                seconds[name].append(time.perf_counter() - t0)
                cpu[name].append(_cpu_seconds() - c0)
        import vlkit
        from vlkit.data.transforms import image_transform

        size = image_transform(vlkit.from_pretrained(model)).image_size
        files = sorted(images.glob("*.png"))
        print(f"\n{args.images} PNGs of {args.image_size} pixels, model input {size} pixels, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs (auto workers: {auto_workers(files, size, 'cpu')}); median of {args.repeats} "
              f"interleaved runs, model load included")  # fmt: skip
        rate = {name: args.images / float(np.median(v)) for name, v in seconds.items()}
        record = {"benchmark": "build", "machine": machine(), "images": args.images, "image_size": args.image_size,
                  "model_input": size, "batch_size": args.batch_size, "repeats": args.repeats, "runs": {}}  # fmt: skip
        for name, value in rate.items():
            ratio = value / rate["vlkit embed"]
            # the same round's embed over this run: each round's two runs share the load of their minute
            paired = float(np.median(np.asarray(seconds["vlkit embed"]) / np.asarray(seconds[name])))
            print(f"  {name:28s} {value:8.1f} images/s  {ratio:5.2f}x embed, paired by round {paired:5.2f}x  (runs: "
                  f"{', '.join(f'{t:.1f}' for t in seconds[name])} s; CPU {float(np.median(cpu[name])):.2f} s)")  # fmt: skip
            record["runs"][name] = {"images_per_s": round(value, 2), "vs_embed": round(ratio, 3),
                                    "vs_embed_paired": round(paired, 3), "seconds": [round(t, 2) for t in seconds[name]],
                                    "cpu_s": [round(c, 2) for c in cpu[name]]}  # fmt: skip
        write_json(args.json, record)


# ---------------------------------------------------------------------------------- query
def sampler(kind: str, n: int, dim: int, rng):
    """A function m -> m unit vectors (m, dim) of one distribution: ``uniform`` on the sphere (the
    hardest case: a vector's 10 nearest are barely nearer than any other), or ``clustered`` (a
    Gaussian mixture of n/100 random centres, each vector its centre plus twice as much noise:
    cosine about 0.2 within a cluster, 0 across; closer to real embeddings). Queries drawn after
    the stored vectors come from the same distribution but are not stored (held out)."""
    centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32) if kind == "clustered" else None

    def draw(m: int) -> np.ndarray:
        x = rng.standard_normal((m, dim), dtype=np.float32)
        if centres is not None:
            x = centres[rng.integers(0, len(centres), m)] + 2.0 * x
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw


def _latencies(index, queries: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
    """Milliseconds per query, one at a time as the web server sends them, on one faiss thread:
    (CPU time of the searching thread: the latency on an idle core; wall-clock time; the ids found
    (Q, 10))."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    cpu, wall, found = [], [], []
    for row in queries:  # (D,)
        t, c = time.perf_counter(), time.thread_time()
        found.append(index.search(row[None], 10)[1][0])
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
    faiss.omp_set_num_threads(threads)
    return cpu, wall, np.stack(found)


def write_json(path: str | None, record: dict) -> None:
    """``record`` (the run's settings, machine and rows so far) to ``path``, replaced whole, after
    every row: a run stopped before its end leaves what it measured."""
    if path:
        from vlkit.files import write_text

        write_text(path, json.dumps(record, indent=1) + "\n")


def machine() -> dict:
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]  # fmt: skip
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()], "cpu": names[0] if names else platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__}  # fmt: skip


def bench_query(args) -> None:
    import faiss

    from vlkit.search.ann import _recall, build_ann

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"\nD={args.dim}, k=10, faiss {faiss.__version__} with {args.threads} threads (builds; a single query "
          f"runs on one), ANN tuned to recall@10 {args.recall} on up to 1000 held-out stored vectors; latency of "
          f"{args.queries} single fresh queries on one thread (p50/p95 of its CPU time, the latency on an idle core; "
          f"and wall-clock p50, which carries the machine's load), recall@10 of {args.recall_queries} fresh queries against flat")  # fmt: skip
    print(f"{'vectors':>9s} {'data':>9s} {'index':>34s} {'build s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'wall p50':>8s} {'recall@10':>9s} {'vs flat':>8s}")  # fmt: skip
    record = {"benchmark": "query", "machine": machine(), "faiss": faiss.__version__, "dim": args.dim,
              "target_recall": args.recall, "queries_timed": args.queries, "recall_queries": args.recall_queries,
              "threads": args.threads, "rows": []}  # fmt: skip
    for n in args.sizes:
        for data in args.data:
            draw = sampler(data, n, args.dim, rng)
            x = draw(n)  # (N, D) stored
            fresh = draw(args.recall_queries)  # (Q, D) never stored
            t0 = time.perf_counter()
            _, truth = faiss.knn(fresh, x, 10, metric=faiss.METRIC_INNER_PRODUCT)  # (Q, 10) exact, by matrix products
            print(f"{'':19s} (exact top-10 of {len(fresh)} queries: {time.perf_counter() - t0:.1f} s)", flush=True)
            flat_p50 = None
            for kind in args.kinds:
                if kind == "hnsw" and n > args.hnsw_max:
                    print(f"{n:9d} {data:>9s} {'hnsw: not measured (--hnsw-max)':>34s}", flush=True)
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                index, tuning = build_ann(x, kind, target=args.recall)  # what `vlkit index build --ann` runs
                built, built_cpu = time.perf_counter() - t0, time.process_time() - c0
                times, wall, found = _latencies(index, fresh[: args.queries])
                if kind == "flat":  # exact: its recall from the timed queries (a batch search costs as much again)
                    recall, recall_on = _recall(found, truth[: args.queries]), len(found)
                else:
                    recall, recall_on = _recall(index.search(fresh, 10)[1], truth), len(fresh)
                p50 = percentile(times, 50)
                flat_p50 = p50 if kind == "flat" else flat_p50
                label = (
                    kind
                    if tuning is None
                    else f"{kind} {tuning.parameter}={tuning.value} "
                    + (f"M={tuning.structure['M']}" if kind == "hnsw" else f"of {tuning.structure['nlist']}")
                )
                speed = f"{flat_p50 / p50:7.1f}x" if flat_p50 else ""
                print(f"{n:9d} {data:>9s} {label:>34s} {built:8.1f} {p50:8.3f} {percentile(times, 95):8.3f} "
                      f"{percentile(wall, 50):8.3f} {recall:9.3f} {speed:>8s}", flush=True)  # fmt: skip
                if tuning is not None and not tuning.reached:
                    print(f"{'':19s} (tuning fell short: {tuning.summary()})", flush=True)
                record["rows"].append({
                    "vectors": n, "data": data, "index": kind, "tuning": None if tuning is None else tuning.to_info(),
                    "build_s": round(built, 2), "build_cpu_s": round(built_cpu, 2),
                    "p50_ms": round(p50, 4), "p95_ms": round(percentile(times, 95), 4),
                    "wall_p50_ms": round(percentile(wall, 50), 4), "wall_p95_ms": round(percentile(wall, 95), 4),
                    "recall_at_10": round(recall, 4), "recall_queries": recall_on,
                    "p50_vs_flat": None if not flat_p50 else round(flat_p50 / p50, 3),
                    "load_average": [round(v, 2) for v in os.getloadavg()],
                })  # fmt: skip
                write_json(args.json, record)
                del index
            del x


# ---------------------------------------------------------------------------------- load
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_load(args) -> None:
    import httpx

    from vlkit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "clip")
        images = shape_folder(tmp / "images", args.images)
        main(["index", "build", "--model", model, "--images", str(images), "--out", str(tmp / "idx"), "--device", "cpu",
              "--workers", "0"])  # fmt: skip
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        server = subprocess.Popen([sys.executable, "-m", "vlkit", "serve", "--index", str(tmp / "idx"), "--port",
                                   str(port)], env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(base + "/api/info", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            uploads = [(images / f"{i:05d}.png").read_bytes() for i in range(20)]
            texts = ["a red circle", "a large blue star on the left", "a small green square", "a purple cross"]
            latency: dict[str, list[float]] = {"text": [], "image": []}
            errors: list[str] = []
            lock = threading.Lock()
            stop = time.monotonic() + args.seconds

            def client(c: int) -> None:
                with httpx.Client(base_url=base, timeout=30) as http:
                    i = c
                    while time.monotonic() < stop:
                        kind = "text" if i % 2 == 0 else "image"
                        t = time.perf_counter()
                        try:
                            if kind == "text":
                                r = http.get("/api/search", params={"text": texts[i % len(texts)], "k": 10})
                            else:
                                r = http.post("/api/search", params={"k": 10},
                                              files={"image": ("q.png", uploads[i % len(uploads)])})  # fmt: skip
                            ok = r.status_code == 200 and len(r.json()["results"]) == 10
                            why = f"{r.status_code}"
                        except httpx.HTTPError as e:
                            ok, why = False, type(e).__name__
                        with lock:
                            latency[kind].append((time.perf_counter() - t) * 1000)
                            if not ok:
                                errors.append(why)
                        i += 1

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(timeout=30)
        total = sum(len(v) for v in latency.values())
        print(f"\n{args.clients} clients for {wall:.1f} s on 127.0.0.1, index of {args.images} images, "
              f"{os.cpu_count()} CPUs: {total / wall:.1f} requests/s, {len(errors)} errors {sorted(set(errors))}")  # fmt: skip
        for kind, values in latency.items():
            print(f"  {kind:5s} {len(values):6d} requests  p50 {percentile(values, 50):7.1f} ms  "
                  f"p95 {percentile(values, 95):7.1f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("build")
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--image-size", type=int, default=64, help="side of the PNG files (decoding cost grows with it)")
    p.add_argument("--model", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="*", default=[2], help="also time the build with these worker counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(run=bench_build)
    p = sub.add_parser("query")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="single queries timed")
    p.add_argument("--recall-queries", type=int, default=1000, help="fresh queries whose recall@10 is measured")
    p.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"])
    p.add_argument("--data", nargs="+", default=["uniform", "clustered"])
    p.add_argument("--recall", type=float, default=0.95, help="the target recall@10 the ANN indexes are tuned to")
    p.add_argument("--hnsw-max", type=int, default=10**7, help="no HNSW above this many vectors (build time)")
    p.add_argument("--threads", type=int, default=2, help="faiss threads (builds and tuning)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(run=bench_query)
    p = sub.add_parser("load")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--model", default=None)
    p.set_defaults(run=bench_load)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
