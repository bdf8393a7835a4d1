#!/usr/bin/env python3
"""Instructions per request of `tf serve`, counted by callgrind: repeatable on a shared
machine where wall-clock rates move by tens of percent from day to day.

    benches/instructions.py TF_BINARY [N] [KINDS]

Each kind (submit, claim, empty_poll, result, jobs_page; default all) runs in a fresh
server under valgrind twice, with N and 2N requests (N = 200 by default), counting only
while the requests run; the figure is (I(2N) - I(N)) / N, which leaves out start-up and
the requests that set the state up. Compare two builds (`cargo build --release`) in one
run; expect a few percent of spread between runs, mostly from the WAL checkpoint thread.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

JOB = {"job_queue": "bench", "test_data": {"test_cmds": "echo hi"}}
KINDS = ["submit", "claim", "empty_poll", "result", "jobs_page"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(connection, method, path, body=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    return response.read()


def prepare(connection, kind, n):
    """The state the measured requests need: jobs to claim, or finished jobs to read."""
    if kind == "submit" or kind == "empty_poll":
        return []
    ids = [json.loads(request(connection, "POST", "/v1/job", JOB))["job_id"] for _ in range(n)]
    if kind != "claim":
        for job_id in ids:
            request(connection, "GET", "/v1/job?queue=bench")
            report = {"job_state": "complete", "provision_status": 0, "test_status": 1}
            request(connection, "POST", f"/v1/result/{job_id}", report)
    return ids


def measured(connection, kind, ids, n):
    for k in range(n):
        if kind == "submit":
            request(connection, "POST", "/v1/job", JOB)
        elif kind == "claim":
            request(connection, "GET", "/v1/job?queue=bench")
        elif kind == "empty_poll":
            request(connection, "GET", "/v1/job?queue=empty")
        elif kind == "result":
            request(connection, "GET", f"/v1/result/{ids[k % len(ids)]}")
        elif kind == "jobs_page":
            request(connection, "GET", "/jobs")


def instructions(binary, kind, n):
    work = tempfile.mkdtemp(prefix="tf-instructions.")
    port = free_port()
    output = os.path.join(work, "callgrind.out")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}",
         "--instr-atstart=no", binary, "serve", "--bind", f"127.0.0.1:{port}",
         "--data-dir", os.path.join(work, "data"), "--tokenless-agents"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            request(connection, "GET", "/v1")
            break
        except OSError:
            time.sleep(0.1)
    ids = prepare(connection, kind, n if kind == "claim" else max(n, 50))
    subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True)
    measured(connection, kind, ids, n)
    subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True)
    server.send_signal(signal.SIGTERM)
    server.wait()
    total = 0
    for name in os.listdir(work):
        if name.startswith("callgrind.out."):
            with open(os.path.join(work, name)) as dump:
                for line in dump:
                    if line.startswith(("summary:", "totals:")):
                        total = max(total, int(line.split()[1]))
    return total


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    kinds = sys.argv[3].split(",") if len(sys.argv) > 3 else KINDS
    for kind in kinds:
        once, twice = instructions(binary, kind, n), instructions(binary, kind, 2 * n)
        print(f"{kind:12s} {(twice - once) / n / 1000:8.1f}k instructions/request", flush=True)


if __name__ == "__main__":
    main()
