#!/usr/bin/env python3
"""Memory returned after large messages: RSS of `amtsbote serve` before, at the peak and
after 16 parallel posts of a ~38 MB message (the sample request with a large attachment).

Run: benches/memory_return.py [--bin target/debug/amtsbote] [--posts 16] [--mb 38]

Starts the given build of `amtsbote serve` on a free loopback port with a fresh data
directory (embedded default: SQLite, the built-in XTA simulator), makes an admin token,
waits for /healthz, reads VmRSS, posts the messages at once (each with its own UUID;
`http.max_bytes_in_flight` and `http.body_timeout_ms` raised so that all of them are in
flight together, as in the probe of issue 13, also on a slow debug build), waits until
every request has left `validated`, `routed` and `transmitting` (sent to the simulator),
then reads VmRSS 5 s later. The peak is VmHWM. Prints one line per figure, and the job
queues' states (a dead route job would leave its request in `validated`).
"""
import argparse
import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UUID = "7d3c1f0e-2b7a-4c55-9a51-0c2f5f7e9b11"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def message(n, mb):
    text = open(os.path.join(ROOT, "examples/messages/ersuchen.xml"), encoding="utf-8").read()
    text = text.replace(UUID, f"7d3c1f0e-2b7a-4c55-9a51-{n:012x}")
    start = text.index('application/pdf">') + len('application/pdf">')
    end = text.index("</anhang>", start)
    raw = b"%PDF-1.4\n" + b"x" * int(mb * 1e6 * 3 / 4)
    return (text[:start] + base64.b64encode(raw).decode() + text[end:]).encode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug/amtsbote"))
    p.add_argument("--posts", type=int, default=16)
    p.add_argument("--mb", type=float, default=38)
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--gdb-trim", action="store_true", help="then call malloc_trim(0) in the serve with gdb, and read RSS again")
    args = p.parse_args()

    data = tempfile.mkdtemp(prefix="amtsbote-mem-")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, AMTSBOTE_DATA_DIR=data, AMTSBOTE_LOG="warn", AMTSBOTE_HTTP_LISTEN=f"127.0.0.1:{port}",
               AMTSBOTE_HTTP_MAX_BYTES_IN_FLIGHT=str(4 << 30), AMTSBOTE_HTTP_BODY_TIMEOUT_MS="600000")
    env.pop("AMTSBOTE_CONFIG", None)
    token = subprocess.run([args.bin, "token", "create", "--role", "admin"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    server = subprocess.Popen([args.bin, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(2)
        bodies = [message(n, args.mb) for n in range(args.posts)]
        before = status_kib(server.pid, "VmRSS")
        statuses = []

        def post(body):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            c.request("POST", "/api/v1/nachrichten", body=body,
                      headers={"Content-Type": "application/xml", "Authorization": f"Bearer {token}"})
            r = c.getresponse()
            r.read()
            statuses.append(r.status)

        threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
        started = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answered = time.time() - started
        del bodies
        # Wait for the pipeline: no request left in validated, routed or transmitting.
        waiting, listed = None, []
        for _ in range(1200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/api/v1/requests?limit=200", headers={"Authorization": f"Bearer {token}"})
                answer = json.loads(c.getresponse().read())
            except (OSError, ValueError):
                time.sleep(0.5)
                continue  # a busy debug build: ask again
            if "requests" not in answer:
                time.sleep(0.5)
                continue  # an error answer (busy): ask again
            listed = answer["requests"]
            waiting = [r["state"] for r in listed if r["state"] in ("validated", "routed", "transmitting")]
            if not waiting and len(listed) >= statuses.count(202):
                break
            time.sleep(0.5)
        settled = time.time() - started
        states = {}
        for r in listed:
            states[r["state"]] = states.get(r["state"], 0) + 1
        time.sleep(5)
        after = status_kib(server.pid, "VmRSS")
        peak = status_kib(server.pid, "VmHWM")
        print(f"{args.posts} posts of {len(message(0, args.mb)) / 1e6:.1f} MB: answers {sorted(set(statuses))} in {answered:.1f} s; settled after {settled:.1f} s: {states}")
        import sqlite3
        q = sqlite3.connect(os.path.join(data, "queue.sqlite"))
        jobs = q.execute("SELECT job_type, status, COUNT(*), MAX(attempts) FROM Jobs GROUP BY 1, 2").fetchall()
        q.close()
        print("jobs (queue, status, count, most attempts): " + ", ".join(f"{t} {st} {n} {a}" for t, st, n, a in jobs))
        print(f"RSS before: {before / 1024:.0f} MB")
        print(f"RSS peak (VmHWM): {peak / 1024:.0f} MB")
        print(f"RSS 5 s after the last request settled: {after / 1024:.0f} MB")
        if args.gdb_trim:
            # Diagnosis: is what stays freed malloc memory (malloc_trim returns it) or live?
            subprocess.run(["gdb", "-p", str(server.pid), "-batch", "-ex", "call (int)malloc_trim(0)"], capture_output=True)
            print(f"RSS after malloc_trim(0) from gdb: {status_kib(server.pid, 'VmRSS') / 1024:.0f} MB")
    finally:
        server.terminate()
        server.wait()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
