#!/usr/bin/env bash
# Writes docs/autoscaling.md (to stdout) from a `make load-test` timeline.csv: the coap-server
# HPA's steps, the CPU it saw, beside the reference report's Figure 3.8.
# Usage: scripts/autoscaling-doc.sh TIMELINE.CSV RATE LOAD_SECONDS CPU_REQUEST [DEVICES]
set -euo pipefail
csv=$1 rate=$2 load_s=$3 request=$4 devices=${5:-32}

# Per second: the coap-server HPA's desired replicas, and the mean CPU % of its Ready pods.
per_second=$(awk -F, 'NR > 1 && $5 != "" {
    t = int($2); if (!(t in d)) { order[n++] = t }; d[t] = $5
    if ($8 == "coap-server" && $12 != "") { sum[t] += $12; cnt[t]++ }
  } END { for (i = 0; i < n; i++) { t = order[i]; printf "%d %d %s\n", t, d[t], (cnt[t] ? sprintf("%.0f", sum[t] / cnt[t]) : "") } }' "$csv")
steps=$(awk 'NR == 1 { prev = $2; next } $2 != prev { printf "| %d s | %d → %d | %s |\n", $1, prev, $2, ($3 == "" ? "–" : $3 " %"); prev = $2 }' <<<"$per_second")
max=$(awk '$2 > m { m = $2 } END { print m + 0 }' <<<"$per_second")
last=$(tail -n1 <<<"$per_second" | awk '{ print $2 }')
length=$(tail -n1 <<<"$per_second" | awk '{ print $1 }')
peak=$(awk '$1 <= '"$load_s"' && $3 != "" && $3 > p { p = $3 } END { print p + 0 }' <<<"$per_second")
# First step out, first step in, and the closest two steps came.
read -r first_out first_in min_gap < <(awk 'NR == 1 { prev = $2; next }
  $2 != prev { if ($2 > prev && fo == "") fo = $1; if ($2 < prev && fi == "") fi = $1
               if (lt != "" && (mg == "" || $1 - lt < mg)) mg = $1 - lt; lt = $1; prev = $2 }
  END { print (fo == "" ? "-" : fo), (fi == "" ? "-" : fi), (mg == "" ? "-" : mg) }' <<<"$per_second")
# The most coap-server pods above the scale-in threshold at one second of the load.
busy=$(awk -F, 'NR > 1 && $8 == "coap-server" && $12 != "" && $12 > 42 && $2 <= '"$load_s"' { c[int($2)]++ }
  END { m = 0; for (t in c) if (c[t] > m) m = c[t]; print m }' "$csv")
date=$(head -n2 "$csv" | tail -n1 | cut -c1-10)

cat <<DOC
# Autoscaling: the reference experiment, recorded

The second reference report's central result is a load test of its auto-scaling group: load on
the dashboards, the group growing from one instance and shrinking back, every instance's state,
CPU and RAM logged each second to \`metrics.csv\` and plotted as CPU against instance count over
time (its Figure 3.8). \`make load-test\` repeats it with the operator's own HPA: the reference
policy unchanged, on the local control plane, against the coap-server on the real node, recorded
by \`iot-loadtest\` ([loadtest.md](loadtest.md)). This page is written by that command
(\`scripts/load-test.sh\`, \`scripts/autoscaling-doc.sh\`); the figures below are from its last run.

## What ran ($date)

- **Policy**: the IotMonitor's defaults, which are the reference's: 1–5 replicas, scale out when
  CPU is above 60 % for 180 s, scale in when below 42 % for 900 s, one step per 150 s
  (\`cooldownSeconds\`). The operator turns it into an autoscaling/v2 HPA
  ([operator.md](operator.md)): target 60 %, scale-up stabilization 180 s, scale-down
  stabilization 900 s with tolerance so that pods go only below 42 %, one pod per 150 s.
- **Target**: coap-server in real containers on the local cluster's real node, with a CPU
  request of $request (small, so that a modest load on this 2-core machine is well above 60 % of
  it; CPU % is of the request, as the HPA reads it), InfluxDB beside it.
- **Load**: sensor-sim's load mode as a Job on the real node: $devices devices over DTLS
  (\`iot-loadtest --devices $devices\`), $rate readings/s in all for $load_s s, each device on its
  own schedule and each reading from a new source port (a new DTLS handshake, a new UDP flow),
  then no load; the recording went on until the HPA was back at one replica
  (\`--until-scaled-in\`). [How the load is generated](#how-the-load-is-generated).
- **Recorded**: ${length} s, one row per pod per second (HPA desired/current replicas, pod state,
  CPU from metrics.k8s.io, memory, readings sent/acknowledged, latency).

## The plot

![coap-server CPU per pod against its replicas over time](autoscaling/timeline.png)

([SVG](autoscaling/timeline.svg)) CPU per pod in % of its request, the replicas as steps, the
scale-out (60 %) and scale-in (42 %) thresholds as lines.

## What it shows

Replicas went from 1 to **$max** and ended at **$last**. The HPA's steps (desired replicas, and the
mean CPU of the coap-server pods at that second):

| at | replicas | mean CPU |
|---|---|---|
$steps

- Under load the coap-server pods' mean CPU peaked at $peak % of the request. The first step
  out came at ${first_out} s: the 180 s hold counts the HPA's recommendations, and a monitor
  created just before the load (as here) has none from before it, while metrics-server needs up
  to ~40 s for a new pod's first rate.
- The load stopped at about ${load_s} s; the first step in came at ${first_in} s (the 900 s
  hold after CPU fell below 42 %).
- At most ${busy} coap-server pod(s) were above 42 % at the same second of the load. Every
  reading was a new UDP flow, which kube-proxy places on one of the pods ready at that moment,
  so a pod the HPA added could take readings from when it was ready.
- The closest two steps were ${min_gap} s apart (cooldown 150 s; the HPA decides at its sync
  period, so a recorded gap may be a few seconds off). At most $max replicas (maximum 5).

## Beside the reference's Figure 3.8

The reference describes its figure so: one instance at the start of the test quickly reached its
processing capacity; the group launched more instances, and CPU fell after each joined the
service; once demand calmed and CPU fell below 42 %, the excess instances were removed. Set the
plot beside that; the method differs:

- The reference balanced HTTP requests over its instances with a load balancer; here kube-proxy
  places each new UDP flow on a pod, and every reading is a new flow (below).
- The reference loaded Grafana over HTTP through a load balancer (Artillery's phases of 1–2 new
  users/s); here the load is CoAP readings to coap-server, since no Grafana image can be had on
  these machines. The policy is the same, and so is what is measured: CPU per replica against
  the replica count, every second.
- The reference plotted the instances' CPU from the cloud provider's API and instance states;
  here CPU comes from metrics.k8s.io (metrics-server, 10 s resolution), which is what the HPA
  decides on, so the plot shows the HPA's own input.

## How the load is generated

\`iot-loadtest\` adds devices \`load-1..$devices\` to the monitor's \`spec.coap.devices\` (a server-side
apply under its own field manager), waits until the operator has their keys in the Secret
\`lab-devices\`, and runs \`sensor-sim load --devices $devices --interval <devices/rate>
--new-port-per-reading\` as a Job with exactly those keys mounted; it removes the devices at the
end ([loadtest.md](loadtest.md)). Each device sends one reading every devices/rate seconds, the
devices spread over that interval.

Why a new port per reading: the Service's UDP traffic goes through kube-proxy, which keeps each
flow (source address and port) on the pod its first datagram was sent to. A few long-lived
flows therefore stay on the first pod while the pods the HPA adds idle. A device that takes a
new source port for each reading, as a sensor on the internet does when its NAT's mapping
expires between readings, is a new flow each time, and each new flow is placed among the pods
ready then. Over DTLS a new port is also a new session (DTLS 1.2 binds a session to the
address), so every reading costs a handshake, which the acknowledgement latency and the
server's CPU include.

## The same against Grafana, on kind

Grafana's image cannot be had on this project's build machines, so the Grafana run is for a
machine with Docker:

\`\`\`sh
make kind-up        # kind cluster, images, metrics-server, the operator (Helm), examples/iotmonitor.yaml
kubectl port-forward svc/lab-grafana 3000 &
iot-loadtest --monitor lab --target grafana --url http://127.0.0.1:3000 \\
  --settle 1500 --until-scaled-in --out grafana-run
# or, with Artillery: tools/loadtest/artillery-grafana.yml (same phases), while recording:
#   iot-loadtest --monitor lab --target none --plot grafana --duration 2100 --out grafana-run
make kind-down
\`\`\`

The built-in profile's Grafana part is the reference's phases and thresholds (p95 < 75 ms,
p99 < 100 ms), judged at the end; \`grafana-run/timeline.png\` is the Figure 3.8 of that run.
Requests go through the Service, which keeps each client on one replica (\`sessionAffinity:
ClientIP\`, so a signed-in user keeps the session): from one load generator every user reaches
the same pod, so the HPA scales on that pod's CPU but the replicas it adds get no share of a
single machine's load. Run the load from several machines (or pods) to see the load spread.
DOC
