"""Live camera preview to 10 websocket clients on loopback, one stalled: frames/s, latency, server memory.

    .venv/bin/python bench/bench_live.py [--quick] [--seconds S] [--layers memory,redis]

The server is the real ASGI app (ssumweb.asgi: origin check, session auth, the real routes) served
by daphne in a subprocess on a temporary SSUMWEB_VAR_DIR, with one extra route for the baseline:
a naive consumer that pushes every frame to every client with no acks. The producer is the real
``instruments.worker.LivePreview`` in a plain thread of the server process (as the embedded
hardware worker runs it), offered simulator frames (512 × 512 uint16, rendered before the run)
at ~30 frames/s; it JPEG-encodes each preview with ``encode_preview`` and sends it through the
channel layer (in-memory, or channels_redis against REDIS_URL, default redis://127.0.0.1:6379/0,
with a private prefix). The clients run in this process (not the server's): 9 fast clients
(websockets 15) that ack each frame on receipt, and one stalled client that completes the
handshake and then never reads nor acks. Latency = receive time − the capture time in the frame
header (both time.time() on one machine). The server's VmRSS is sampled from /proc every 0.25 s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_CLIENTS = 10
PRODUCER_FPS = 30.0
HEADER = struct.Struct(">Qd")  # as instruments.consumers.HEADER: seq, capture time
NAIVE_PATH = "bench/naive/{pk}/"
REAL_PATH = "ws/instruments/{pk}/live/"


# ------------------------------------------------------------------------------ server side

def _django(var_dir: str, layer: str, redis_url: str, prefix: str) -> None:
    os.environ["SSUMWEB_VAR_DIR"] = var_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "ssumweb.settings"
    os.environ["EMBEDDED_WORKERS"] = "0"
    os.environ["EMBEDDED_HARDWARE_WORKER"] = "0"
    os.environ.pop("REDIS_URL", None)
    if layer == "redis":
        os.environ["REDIS_URL"], os.environ["REDIS_PREFIX"] = redis_url, prefix
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def setup_db(var_dir: str) -> dict:
    """Migrate a fresh database; a viewer with a session, a project and an instrument."""
    _django(var_dir, "memory", "", "")
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from instruments.models import Instrument
    from ssumweb.models import Membership, Project, Role

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    user = get_user_model().objects.create_user(username="bench", password="bench-pw")
    Membership.objects.create(project=project, user=user, role=Role.VIEWER)
    instrument = Instrument.objects.create(project=project, name="sim")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {"cookie": f"sessionid={session.session_key}", "instrument": instrument.pk}


def serve(args) -> None:
    """Daphne on the real app + the naive route; LivePreview fed at ~30 fps after 'go' on stdin."""
    _django(args.var_dir, args.layer, args.redis_url, args.prefix)
    import numpy as np
    from channels.auth import AuthMiddlewareStack
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from daphne.server import Server
    from django.urls import re_path

    from instruments import consumers
    from instruments.consumers import HEADER
    from instruments.control import live_group
    from instruments.sim.world import SimWorld
    from instruments.worker import LivePreview
    from ssumweb.asgi import django_asgi_app
    from ssumweb.routing import websocket_urlpatterns

    class NaiveLiveConsumer(AsyncWebsocketConsumer):
        """Baseline: every frame to every client as it comes, acks ignored (no auth check beyond the stack)."""

        async def connect(self):
            consumers._serving_loop = asyncio.get_running_loop()  # same send path as the real consumer
            self.group = live_group(int(self.scope["url_route"]["kwargs"]["pk"]))
            await self.channel_layer.group_add(self.group, self.channel_name)
            await self.accept()

        async def disconnect(self, code):
            await self.channel_layer.group_discard(self.group, self.channel_name)

        async def live_frame(self, event):
            await self.send(bytes_data=HEADER.pack(event["seq"], event["t"]) + event["jpeg"])

    routes = [re_path(r"^bench/naive/(?P<pk>\d+)/$", NaiveLiveConsumer.as_asgi()), *websocket_urlpatterns]
    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes))),
    })

    if args.cross_loop:  # the send path before the fix: async_to_sync on a fresh loop in another thread
        consumers.serving_loop = lambda: None
    (Path(args.var_dir) / "static").mkdir(exist_ok=True)
    world = SimWorld(seed=1)
    bank = []
    for i in range(8):  # different places on the chip, rendered before the run (not part of the figure)
        world.set_piezo_nm(20_000 + 3_000 * i, 20_000 + 1_500 * i, 0.0)
        bank.append(world.render_frame(exposure_s=0.02))
    assert all(f.dtype == np.uint16 for f in bank)

    preview = LivePreview(args.instrument)
    stop = threading.Event()

    def produce():
        sys.stdin.readline()  # "go"
        threading.Thread(target=preview.run_forever, args=(stop,), daemon=True, name="preview").start()
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < args.seconds:
            preview.offer(bank[i % len(bank)])
            i += 1
            time.sleep(max(0.0, t0 + i / PRODUCER_FPS - time.monotonic()))
        stop.set()
        print(json.dumps({"offered": i, "sent": preview.seq}), flush=True)

    threading.Thread(target=produce, daemon=True, name="producer").start()
    print("READY", flush=True)
    Server(application, endpoints=[f"tcp:port={args.port}:interface=127.0.0.1"], verbosity=0).run()


# ------------------------------------------------------------------------------ client side

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


async def fast_client(uri: str, headers: dict, stats: dict, stop: asyncio.Event, ready: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(uri, additional_headers={"Cookie": headers["Cookie"]}, origin=headers["Origin"], max_size=None,
                       compression=None) as ws:
        ready.set()
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=0.2)
            except TimeoutError:
                continue
            now = time.time()
            seq, captured = HEADER.unpack_from(message)
            stats["lat"].append(now - captured)
            stats["seqs"].append(seq)
            stats["times"].append(now)
            await ws.send("ack")


def stalled_client(port: int, path: str, headers: dict) -> socket.socket:
    """Completes the websocket handshake, then never reads and never acks (small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    request = (f"GET /{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    sock.sendall(request.encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("stalled client: server closed during the handshake")
        reply += chunk
    if b" 101 " not in reply.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"stalled client: handshake refused: {reply[:80]!r}")
    return sock


async def run_clients(port: int, path: str, cookie: str, server: subprocess.Popen, seconds: float) -> dict:
    headers = {"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie}
    uri = f"ws://127.0.0.1:{port}/{path}"
    stalled = stalled_client(port, path, headers)
    stop = asyncio.Event()
    stats = [{"lat": [], "seqs": [], "times": []} for _ in range(N_CLIENTS - 1)]
    readies = [asyncio.Event() for _ in stats]
    tasks = [asyncio.create_task(fast_client(uri, headers, s, stop, r)) for s, r in zip(stats, readies, strict=False)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=30)
    await asyncio.sleep(0.5)
    rss = [(0.0, rss_kib(server.pid))]
    server.stdin.write("go\n")
    server.stdin.flush()
    t0 = time.time()
    while time.time() - t0 < seconds + 0.5:
        await asyncio.sleep(0.25)
        rss.append((time.time() - t0, rss_kib(server.pid)))
    stop.set()
    await asyncio.gather(*tasks)
    stalled.close()
    return {"clients": stats, "rss": rss, "t0": t0, "seconds": seconds}


def summarise(result: dict, produced: dict) -> dict:
    seconds = result["seconds"]
    fps, lats = [], []
    for s in result["clients"]:
        in_run = [t for t in s["times"] if t - result["t0"] <= seconds]
        fps.append(len(in_run) / seconds)
        lats.extend(s["lat"])
    lats.sort()
    rss = [kib for _t, kib in result["rss"]]
    first_half = [kib for t, kib in result["rss"] if 1.0 <= t <= seconds / 2]
    second_half = [kib for t, kib in result["rss"] if t > seconds / 2]
    return {"fps_min": min(fps), "fps_median": statistics.median(fps),
            "p50_ms": 1e3 * lats[len(lats) // 2] if lats else float("nan"),
            "p95_ms": 1e3 * lats[int(0.95 * (len(lats) - 1))] if lats else float("nan"),
            "max_ms": 1e3 * lats[-1] if lats else float("nan"),
            "rss_start_mib": rss[0] / 1024, "rss_end_mib": rss[-1] / 1024, "rss_max_mib": max(rss) / 1024,
            "rss_growth_mib_s": ((statistics.mean(second_half) - statistics.mean(first_half)) / 1024
                                 / (seconds / 2)) if first_half and second_half else float("nan"),
            "sent_fps": produced.get("sent", 0) / seconds}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(*, var_dir: str, setup: dict, layer: str, path: str, seconds: float, redis_url: str,
            cross_loop: bool = False) -> dict:
    port = free_port()
    prefix = f"bench-live-{os.getpid()}-{port}"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--var-dir", var_dir, "--layer", layer, "--port", str(port),
         "--instrument", str(setup["instrument"]), "--seconds", str(seconds), "--redis-url", redis_url,
         "--prefix", prefix, *(["--cross-loop"] if cross_loop else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        if server.stdout.readline().strip() != "READY":
            raise RuntimeError("the bench server did not start")
        deadline = time.time() + 30
        while True:  # daphne listens a moment after READY
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        result = asyncio.run(run_clients(port, path.format(pk=setup["instrument"]), setup["cookie"], server,
                                         seconds))
        produced = json.loads(server.stdout.readline() or "{}")
        return summarise(result, produced)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s runs instead of 10")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--layers", default="memory,redis")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--var-dir", help=argparse.SUPPRESS)
    parser.add_argument("--layer", default="memory", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--instrument", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench-live", help=argparse.SUPPRESS)
    parser.add_argument("--cross-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.setup:
        print(json.dumps(setup_db(args.var_dir)))
        return
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    if not 1.0 <= seconds <= 600:
        raise ValueError(f"--seconds must be within [1, 600], got {seconds}")
    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    for name in layers:
        if name not in ("memory", "redis"):
            raise ValueError(f"--layers: each must be 'memory' or 'redis', got {name!r}")
    with tempfile.TemporaryDirectory(prefix="bench-live-") as var_dir:
        out = subprocess.run([sys.executable, __file__, "--setup", "--var-dir", var_dir], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        setup = json.loads(out.strip().splitlines()[-1])
        print(f"{N_CLIENTS} clients on loopback (1 stalled: handshake, then never reads), producer "
              f"{PRODUCER_FPS:.0f} fps of 512x512 simulator frames through LivePreview, {seconds:.0f} s per run; "
              f"goal: >= 20 fps to the fast clients, p95 < 100 ms, flat server memory")
        print(f"{'layer':7} {'consumer':22} {'sent/s':>7} {'fps min':>8} {'fps med':>8} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'max ms':>8} {'RSS start→end MiB':>18} {'growth MiB/s':>13}")
        for layer in layers:
            rows = {}
            variants = [("naive (baseline)", NAIVE_PATH, False), ("LiveViewConsumer", REAL_PATH, False)]
            if layer == "memory":  # the send path the fix replaced, for the record
                variants.append(("real, async_to_sync", REAL_PATH, True))
            for label, path, cross_loop in variants:
                r = one_run(var_dir=var_dir, setup=setup, layer=layer, path=path, seconds=seconds,
                            redis_url=args.redis_url, cross_loop=cross_loop)
                rows[label] = r
                print(f"{layer:7} {label:22} {r['sent_fps']:7.1f} {r['fps_min']:8.1f} {r['fps_median']:8.1f} "
                      f"{r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['max_ms']:8.1f} "
                      f"{r['rss_start_mib']:8.1f}→{r['rss_end_mib']:7.1f} {r['rss_growth_mib_s']:13.2f}",
                      flush=True)
            base, real = rows["naive (baseline)"], rows["LiveViewConsumer"]
            print(f"{layer:7} ratio real/naive: fps min {real['fps_min'] / max(base['fps_min'], 1e-9):.2f}x, "
                  f"p95 {real['p95_ms'] / max(base['p95_ms'], 1e-9):.2f}x, RSS growth "
                  f"{real['rss_growth_mib_s']:.2f} vs {base['rss_growth_mib_s']:.2f} MiB/s")


if __name__ == "__main__":
    main()
