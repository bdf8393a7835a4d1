#!/usr/bin/env python3
"""Instructions per request of `tf serve`, counted by callgrind: repeatable on a shared
machine where wall-clock rates move by tens of percent from day to day.

    benches/instructions.py TF_BINARY [N] [KINDS]

Each kind (submit, claim, empty_poll, fragment, result, jobs_page; default all) runs in a
fresh server under valgrind twice, with N and 2N requests (N = 200 by default), counting
only while the requests run; the figure is (I(2N) - I(N)) / N, which leaves out start-up
and the requests that set the state up. Compare two builds (`cargo build --release`) in
one run; expect a few percent of spread between runs, mostly from the WAL checkpoint thread.

Agent requests (claims, empty polls, log fragments, results) are made as an agent does
since 2023: with the `agent_name` cookie and the access token of an agent client, which
the script creates with `tf clients add` and logs in with before counting. So any tf since
the server issue (commit c0e297c, before `--tokenless-agents`) gets the same requests.
Every answer's status is checked; a kind a binary does not serve (the `/jobs` page before
the web pages) is reported as not counted.
"""
import base64
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
KINDS = ["submit", "claim", "empty_poll", "fragment", "result", "jobs_page"]
AGENT_ID, AGENT_SECRET = "bench-agent", "bench-agent-secret-0123456789"
# A small fragment as agents send about once a second: three 80-column lines.
LOG_DATA = ("x" * 79 + "\n") * 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(connection, method, path, body=None, headers=None, expected=None):
    headers = dict(headers or {})
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    answer = response.read()
    if expected is not None and response.status != expected:
        raise RuntimeError(
            f"{method} {path}: expected {expected}, got {response.status}: {answer!r}")
    return answer


def add_agent_client(binary, data_dir):
    """An agent client in the server's data dir, made before the server starts."""
    secret_file = os.path.join(data_dir, "agent.secret")
    os.makedirs(data_dir, mode=0o700)
    with open(secret_file, "w") as file:
        file.write(AGENT_SECRET)
    subprocess.run([binary, "clients", "--data-dir", data_dir, "add", AGENT_ID,
                    "--role", "agent", "--secret-file", secret_file],
                   check=True, capture_output=True)


def agent_headers(connection):
    """The headers of an agent's requests: its name, and an access token from a login."""
    basic = base64.b64encode(f"{AGENT_ID}:{AGENT_SECRET}".encode()).decode()
    answer = request(connection, "POST", "/v1/oauth2/token",
                     headers={"Authorization": f"Basic {basic}"}, expected=200)
    token = json.loads(answer)["access_token"]
    return {"Authorization": f"Bearer {token}", "Cookie": f"agent_name={AGENT_ID}"}


def prepare(connection, agent, kind, n):
    """The state the measured requests need: jobs to claim, a job to log to, or finished
    jobs to read."""
    if kind == "submit" or kind == "empty_poll":
        return []
    if kind == "fragment":
        n = 1
    ids = [json.loads(request(connection, "POST", "/v1/job", JOB, expected=200))["job_id"]
           for _ in range(n)]
    if kind == "claim":
        return ids
    for job_id in ids:
        request(connection, "GET", "/v1/job?queue=bench", headers=agent, expected=200)
        if kind != "fragment":
            report = {"job_state": "complete", "status": {"provision": 0, "test": 1}}
            request(connection, "POST", f"/v1/result/{job_id}", report, agent, expected=200)
    return ids


def measured(connection, agent, kind, ids, n):
    for k in range(n):
        if kind == "submit":
            request(connection, "POST", "/v1/job", JOB, expected=200)
        elif kind == "claim":
            request(connection, "GET", "/v1/job?queue=bench", headers=agent, expected=200)
        elif kind == "empty_poll":
            request(connection, "GET", "/v1/job?queue=empty", headers=agent, expected=204)
        elif kind == "fragment":
            fragment = {"fragment_number": k, "timestamp": "2026-01-01T00:00:00",
                        "phase": "test", "log_data": LOG_DATA}
            request(connection, "POST", f"/v1/result/{ids[0]}/log/output", fragment, agent,
                    expected=200)
        elif kind == "result":
            request(connection, "GET", f"/v1/result/{ids[k % len(ids)]}", expected=200)
        elif kind == "jobs_page":
            request(connection, "GET", "/jobs", expected=200)


def instructions(binary, kind, n):
    work = tempfile.mkdtemp(prefix="tf-instructions.")
    port = free_port()
    output = os.path.join(work, "callgrind.out")
    data_dir = os.path.join(work, "data")
    add_agent_client(binary, data_dir)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}",
         "--instr-atstart=no", binary, "serve", "--bind", f"127.0.0.1:{port}",
         "--data-dir", data_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            request(connection, "GET", "/v1")
            break
        except OSError:
            time.sleep(0.1)
    try:
        agent = agent_headers(connection)
        ids = prepare(connection, agent, kind, n if kind == "claim" else max(n, 50))
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], capture_output=True)
        measured(connection, agent, kind, ids, n)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True)
    finally:
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
        try:
            once, twice = instructions(binary, kind, n), instructions(binary, kind, 2 * n)
        except RuntimeError as error:  # e.g. no /jobs page before the web pages came
            print(f"{kind:12s} not counted: {str(error)[:120]}", flush=True)
            continue
        print(f"{kind:12s} {(twice - once) / n / 1000:8.1f}k instructions/request", flush=True)


if __name__ == "__main__":
    main()
