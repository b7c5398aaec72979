"""The data and the load of scripts/bench-backup.sh (Python's standard library only).

  fill URL DB POINTS      writes POINTS DHT readings as coap-server stores them (measurements
                          temperature and humidity, tags place and sensor, field value), 200 sensors
                          every 10 s back from now, in batches of 10,000; prints points/s
  load URL DB OUT STOP MAX_S
                          a steady write load of small batches (20 readings every 20 ms, one
                          connection: about coap-server's batches at 1,000 readings/s) until the
                          file STOP exists or MAX_S seconds pass; appends "start_s latency_ms" per
                          write to OUT
  window OUT SPANS        p50, p99, max (ms) and count of the writes that started within one of the
                          spans (lines "from to", Unix seconds) of the file SPANS
  spans SPANS             the median length of the spans (s), and their count
"""
import http.client
import os
import queue
import random
import sys
import threading
import time
from urllib.parse import urlparse

SENSORS = 200
EVERY_NS = 10 * 10**9
BATCH = 10_000


def connection(url):
    u = urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def post(conn, db, body, precision):
    conn.request("POST", f"/write?db={db}&precision={precision}", body=body,
                 headers={"Content-Type": "text/plain"})
    resp = conn.getresponse()
    text = resp.read()
    if resp.status != 204:
        raise SystemExit(f"write failed: {resp.status} {text[:200]!r}")


def fill(url, db, points):
    """Two writer threads post what the main thread generates: generation and InfluxDB overlap."""
    points = int(points)
    readings = (points + 1) // 2  # one temperature and one humidity point per reading
    start_ns = time.time_ns() - (readings // SENSORS + 1) * EVERY_NS
    rng = random.Random(24)
    temp = [21.0 + rng.uniform(-3, 3) for _ in range(SENSORS)]
    hum = [45.0 + rng.uniform(-10, 10) for _ in range(SENSORS)]
    work = queue.Queue(maxsize=4)
    errors = []

    def writer():
        conn = connection(url)
        while (body := work.get()) is not None:
            try:
                post(conn, db, body, "ns")
            except BaseException as e:  # reported by the main thread
                errors.append(e)
        conn.close()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    written, lines = 0, []
    for i in range(readings):
        s = i % SENSORS
        # coap-server stamps a reading with its receive time in nanoseconds: every 10 s, give or
        # take the network's and the sensor's jitter (up to 50 ms).
        ts = start_ns + (i // SENSORS) * EVERY_NS + rng.randrange(-50_000_000, 50_000_000)
        # Indoor readings: a slow walk, and the sensor's noise of a tenth or two.
        temp[s] += rng.uniform(-0.05, 0.05)
        hum[s] += rng.uniform(-0.1, 0.1)
        t, h = temp[s] + rng.uniform(-0.2, 0.2), hum[s] + rng.uniform(-0.5, 0.5)
        tags = f"place=room{s % 20},sensor=dht-{s}"
        lines.append(f"temperature,{tags} value={t:.1f} {ts}")
        if written + len(lines) < points:
            lines.append(f"humidity,{tags} value={h:.1f} {ts}")
        if len(lines) >= BATCH or i == readings - 1:
            work.put("\n".join(lines))
            written += len(lines)
            lines = []
            if errors:
                break
    for _ in threads:
        work.put(None)
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"fill failed: {errors[0]}")
    secs = time.monotonic() - t0
    print(f"{written} {secs:.1f} {written / secs:.0f}")


def load(url, db, out, stop, max_s):
    conn = connection(url)
    deadline = time.time() + float(max_s)
    with open(out, "a", buffering=1) as f:  # line by line: read while it runs
        while not os.path.exists(stop) and time.time() < deadline:
            now_ns = time.time_ns()
            body = "\n".join(
                f"temperature,place=live,sensor=live-{k} value={20 + k / 10:.1f} {now_ns}"
                for k in range(20))
            t0 = time.monotonic()
            start = time.time()
            post(conn, db, body, "ns")
            ms = (time.monotonic() - t0) * 1000
            f.write(f"{start:.3f} {ms:.3f}\n")
            time.sleep(max(0.0, 0.020 - (time.monotonic() - t0)))
    conn.close()


def read_spans(path):
    return [tuple(map(float, line.split())) for line in open(path) if line.strip()]


def window(out, spans_file):
    spans = read_spans(spans_file)
    lat = sorted(float(ms) for line in open(out) for t, ms in [line.split()]
                 if any(a <= float(t) < b for a, b in spans))
    if not lat:
        print("- - - 0")
        return
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"{pick(0.5):.2f} {pick(0.99):.2f} {lat[-1]:.2f} {len(lat)}")


def spans(spans_file):
    lengths = sorted(b - a for a, b in read_spans(spans_file))
    print(f"{lengths[len(lengths) // 2]:.2f} {len(lengths)}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"fill": fill, "load": load, "window": window, "spans": spans}[cmd](*args)
