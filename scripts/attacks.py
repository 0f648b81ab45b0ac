#!/usr/bin/env python3
"""Runs the attacks of the hardening issue against a running mmsub and reports, for each, how it
was answered, how long the answer took, the node's RSS growth while it ran, and the slowest
/healthz answer meanwhile (a probe every 100 ms). Standard library only.

    MMSUB_DATA_DIR=$(mktemp -d) MMSUB_TRUSTED_PROXIES=127.0.0.1 MMSUB_SEND_RATE_PER_USER=off \
      ./target/release/mmsub & SERVER=$!
    python3 scripts/attacks.py --url http://127.0.0.1:8000 --server-pid $SERVER

Each attack is bounded in count and time and stops by itself. Prints one JSON object per attack.
"""

import argparse
import base64
import json
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request


def rss(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Watch:
    """Samples the server's RSS every 20 ms and /healthz every 100 ms while an attack runs."""

    def __init__(self, url, pid):
        self.url, self.pid = url, pid
        self.stop = threading.Event()
        self.peak = self.before = rss(pid) if pid else 0
        self.slowest_health = 0.0
        self.health_failures = 0

    def __enter__(self):
        self.threads = [threading.Thread(target=self.sample_rss), threading.Thread(target=self.probe)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join()

    def sample_rss(self):
        while self.pid and not self.stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.02)

    def probe(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
            except Exception:
                self.health_failures += 1
            self.slowest_health = max(self.slowest_health, time.monotonic() - started)
            time.sleep(0.1)


def post(url, query, variables=None, token=None, content_type="application/json", timeout=30):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url + "/graphql/", data=body, method="POST")
    request.add_header("content-type", content_type)
    if token:
        request.add_header("authorization", "JWT " + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def first_error(body):
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:120].decode(errors="replace")
    errors = answer.get("errors") or []
    if errors:
        return errors[0].get("message", "")[:120]
    return json.dumps(answer)[:120]


def fragment_bomb(levels, root="query"):
    text = f"{root} {{ ...f{levels} }}\nfragment f0 on Query {{ __typename }}\n"
    for n in range(1, levels + 1):
        text += f"fragment f{n} on Query {{ ...f{n-1} ...f{n-1} }}\n"
    return text


def inline_bomb(levels):
    text = "query($y: Boolean = true) { ...f%d }\nfragment f0 on Query { __typename }\n" % levels
    for n in range(1, levels + 1):
        text += f"fragment f{n} on Query {{ ... on Query {{ ...f{n-1} }} ... @include(if: $y) {{ ...f{n-1} }} }}\n"
    return text


def ws_frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_subscribe(host, port, protocol, query):
    """Opens a socket, subscribes anonymously, returns the first frame's text after the ack."""
    s = socket.create_connection((host, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws/graphql/ HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    data = data.split(b"\r\n\r\n", 1)[1]
    start = "start" if protocol == "graphql-ws" else "subscribe"
    s.sendall(ws_frame(json.dumps({"type": "connection_init"})))
    s.sendall(ws_frame(json.dumps({"type": start, "id": "1", "payload": {"query": query}})))
    texts = []
    while True:
        while len(data) < 2:
            data += s.recv(65536)
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            while len(data) < 4:
                data += s.recv(65536)
            length, offset = struct.unpack(">H", data[2:4])[0], 4
        while len(data) < offset + length:
            data += s.recv(65536)
        text = data[offset:offset + length].decode(errors="replace")
        data = data[offset + length:]
        if '"connection_ack"' in text or '"ka"' in text:
            continue
        s.close()
        return text[:160]


def raw(host, port, request, wait):
    s = socket.create_connection((host, port), timeout=wait + 5)
    s.sendall(request)
    s.settimeout(wait + 5)
    try:
        answer = s.recv(4096)
    except socket.timeout:
        answer = b"(no answer)"
    s.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace")


def login_flood(url, user, attackers=400):
    """`attackers` concurrent wrong-password logins for `user` from 203.0.113.9, and meanwhile
    a real user's login from 198.51.100.1 (addresses named by X-Forwarded-For: run the server
    with MMSUB_TRUSTED_PROXIES=127.0.0.1). Returns the real user's login time."""
    q = "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"

    def attempt(client, username, password, out):
        body = json.dumps({"query": q, "variables": {"u": username, "p": password}}).encode()
        request = urllib.request.Request(url + "/graphql/", data=body, method="POST")
        request.add_header("content-type", "application/json")
        request.add_header("x-forwarded-for", client)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                out.append((time.monotonic() - started, response.read()))
        except Exception as e:
            out.append((time.monotonic() - started, str(e).encode()))

    results, real = [], []
    threads = [threading.Thread(target=attempt, args=("203.0.113.9", user, f"guess{i}", results)) for i in range(attackers)]
    for t in threads:
        t.start()
    attempt("198.51.100.1", "real" + user, "Str0ng!Pass", real)
    for t in threads:
        t.join()
    checked = sum(1 for _, b in results if b"valid credentials" in b)
    throttled = sum(1 for _, b in results if b"Too many login attempts" in b)
    answer = f"real user's login {real[0][0]*1000:.0f} ms ({'ok' if b'token' in real[0][1] else real[0][1][:80]}); attackers: {checked} checked, {throttled} throttled of {attackers}"
    return 200, answer.encode()


def sign_up(url, name):
    q = "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode } }"
    post(url, q, {"u": name, "p": "Str0ng!Pass", "e": name + "@example.com"})
    status, body = post(url, "mutation($u: String!) { tokenAuth(username: $u, password: \"Str0ng!Pass\") { token } }", {"u": name})
    return json.loads(body)["data"]["tokenAuth"]["token"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args()
    url = args.url.rstrip("/")
    host, port = url.split("//", 1)[1].split(":")
    port = int(port)
    run = str(int(time.time()) % 100000)
    token = sign_up(url, "atk" + run)
    sign_up(url, "realatk" + run)
    channel = "atk" + run
    post(url, "mutation($n: String!) { channelCreate(channelName: $n, members: []) { status } }", {"n": channel}, token)
    big = "x" * 16000
    for i in range(60):
        post(url, "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { status } }", {"c": channel, "t": big}, token)

    page = f'getMessageList(channelIdentifier: "{channel}", page: {{pageSize: 200}}) {{ data {{ id message createAt owner {{ username }} }} }}'
    attacks = [
        ("fragment bomb, 30 levels, HTTP, anonymous", lambda: post(url, fragment_bomb(30))),
        ("inline fragments and @include, 30 levels", lambda: post(url, inline_bomb(30))),
        ("fragment bomb, graphql-transport-ws, anonymous", lambda: (200, ws_subscribe(host, port, "graphql-transport-ws", fragment_bomb(30, "subscription")).encode())),
        ("fragment bomb, legacy graphql-ws, anonymous", lambda: (200, ws_subscribe(host, port, "graphql-ws", fragment_bomb(30)).encode())),
        ("160 aliased getMessageList(pageSize: 200)", lambda: post(url, "{ " + " ".join(f"m{i}: {page}" for i in range(160)) + " }", token=token)),
        ("40 aliased pages of 1000 by variable", lambda: post(url, "query($p: PageType) { " + " ".join(f'm{i}: getMessageList(channelIdentifier: "{channel}", page: $p) {{ data {{ message }} }}' for i in range(40)) + " }", {"p": {"pageSize": 1000}}, token)),
        ("500 KB of nested braces", lambda: post(url, "{" * 500000)),
        ("500 aliased password guesses", lambda: post(url, "mutation { " + " ".join(f'g{i}: tokenAuth(username: "atk{run}", password: "guess{i}") {{ token }}' for i in range(500)) + " }")),
        ("400 concurrent wrong-password logins, and a real user's login meanwhile", lambda: login_flood(url, "atk" + run)),
        ("a Content-Length body that never ends", lambda: (0, raw(host, port, b"POST /graphql/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", 11).encode())),
        ("text/plain POST (a web page's simple request)", lambda: post(url, "{ __typename }", content_type="text/plain")),
    ]
    for name, attack in attacks:
        with Watch(url, args.server_pid) as watch:
            started = time.monotonic()
            status, body = attack()
            elapsed = time.monotonic() - started
        print(json.dumps({
            "attack": name,
            "status": status,
            "answer": first_error(body) if isinstance(body, bytes) and body[:1] in b"{[" else body.decode(errors="replace")[:160],
            "answered_ms": round(elapsed * 1000, 1),
            "rss_growth_mb": round((watch.peak - watch.before) / 2**20, 1) if args.server_pid else None,
            "rss_mb": round(watch.peak / 2**20, 1) if args.server_pid else None,
            "slowest_healthz_ms": round(watch.slowest_health * 1000, 1),
            "healthz_failures": watch.health_failures,
        }), flush=True)


if __name__ == "__main__":
    main()
