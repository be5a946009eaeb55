"""Image search speed: index build vs `vlkit embed`, query latency of FAISS indexes, and a load
test of the web server.

    python benchmarks/bench_search.py build [--images 600] [--model FOLDER]
    python benchmarks/bench_search.py query [--sizes 10000 100000 1000000] [--dim 512]
    python benchmarks/bench_search.py load [--clients 20] [--seconds 20]

``build``: images/s of `vlkit index build` and of `vlkit embed` on the same folder of shape images
(64 pixels, a random clip-tiny unless --model), each run in-process, alternating, best of
``--repeats``; the ratio build/embed (>= 1 means the build is not slower).
``query``: random unit vectors (D=512), 1000 queries one at a time (the web server's case): p50
and p95 latency of flat (exact), HNSW and IVF, the ANN indexes' build time and recall@10 against
flat.
``load``: `vlkit serve` in a subprocess on 127.0.0.1 over an index of ``--images`` shapes; N client
threads send text queries (GET) and image uploads (POST) in turn for S seconds: requests/s,
p50/p95 per kind, and the errors (non-200 answers).
"""

from __future__ import annotations

import argparse
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
def bench_build(args) -> None:
    from vlkit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "clip")
        images = shape_folder(tmp / "images", args.images, args.image_size)
        runs = {"embed": [], "index build": []}
        for r in range(args.repeats):
            t0 = time.perf_counter()
            main(["embed", "--model", model, "--images", str(images), "--out", str(tmp / f"emb{r}"), "--device", "cpu",
                  "--batch-size", str(args.batch_size)])  # fmt: skip
            runs["embed"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            main(["index", "build", "--model", model, "--images", str(images), "--out", str(tmp / f"idx{r}"),
                  "--device", "cpu", "--batch-size", str(args.batch_size), "--workers", str(args.workers)])  # fmt: skip
            runs["index build"].append(time.perf_counter() - t0)
        rate = {k: args.images / min(v) for k, v in runs.items()}
        print(f"\n{args.images} images of {args.image_size} pixels, batch {args.batch_size}, index build with {args.workers} data workers, "
              f"best of {args.repeats} (model load included)")  # fmt: skip
        for k, v in rate.items():
            print(f"  {k:12s} {v:8.1f} images/s")
        print(f"  ratio index build / embed: {rate['index build'] / rate['embed']:.2f}")


# ---------------------------------------------------------------------------------- query
def vectors(n: int, dim: int, kind: str, rng) -> np.ndarray:
    """``n`` unit vectors (n, dim): ``uniform`` on the sphere (the hardest case: a vector's 10
    nearest are barely nearer than any other), or ``clustered`` (n/100 random centres, each vector
    its centre plus twice as much noise: cosine about 0.2 within a cluster, 0 across)."""
    if kind == "uniform":
        x = rng.standard_normal((n, dim), dtype=np.float32)
    else:
        centres = rng.standard_normal((max(1, n // 100), dim), dtype=np.float32)
        x = centres[rng.integers(0, len(centres), n)] + 2.0 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _latencies(index, queries: np.ndarray) -> list[float]:
    times = []
    for row in queries:  # (D,): one query at a time, as the web server sends them
        t = time.perf_counter()
        index.search(row[None], 10)
        times.append((time.perf_counter() - t) * 1000)
    return times


def bench_query(args) -> None:
    import faiss

    from vlkit.search.ann import build_faiss, recall_at_k

    rng = np.random.default_rng(0)
    print(f"\nD={args.dim}, {args.queries} single queries, k=10, faiss threads {faiss.omp_get_max_threads()}; "
          "recall@10 against flat on up to 1000 stored vectors as queries")  # fmt: skip
    print(
        f"{'vectors':>9s} {'data':>9s} {'index':>16s} {'build s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'recall@10':>9s}"
    )
    for n in args.sizes:
        for data in args.data:
            x = vectors(n, args.dim, data, rng)  # (N, D)
            q = x[rng.choice(n, min(args.queries, n), replace=False)]
            for kind in args.kinds if n <= args.ann_max else ["flat"]:
                t0 = time.perf_counter()
                index = build_faiss(x, kind)
                built = time.perf_counter() - t0
                settings = {"flat": [("", None)], "hnsw": [(f"efSearch={e}", e) for e in args.ef_search],
                            "ivf": [(f"nprobe=1/{f}", f) for f in args.nprobe_fraction]}[kind]  # fmt: skip
                for label, value in settings:
                    if kind == "hnsw":
                        index.hnsw.efSearch = value
                    elif kind == "ivf":
                        index.nprobe = max(1, index.nlist // value)
                    times = _latencies(index, q)
                    recall = recall_at_k(index, x, k=10, queries=min(1000, n)) if kind != "flat" else 1.0
                    print(f"{n:9d} {data:>9s} {kind + ' ' + label:>16s} {built:8.1f} {percentile(times, 50):8.3f} "
                          f"{percentile(times, 95):8.3f} {recall:9.3f}", flush=True)  # fmt: skip
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
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.set_defaults(run=bench_build)
    p = sub.add_parser("query")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"])
    p.add_argument("--data", nargs="+", default=["uniform", "clustered"])
    p.add_argument(
        "--ef-search", type=int, nargs="+", default=[256], help="HNSW query-time settings (default: the index default)"
    )
    p.add_argument(
        "--nprobe-fraction",
        type=int,
        nargs="+",
        default=[4],
        help="IVF: probe 1/F of the lists (default: the index default)",
    )
    p.add_argument("--ann-max", type=int, default=10**7, help="only flat above this many vectors")
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
