"""Probes what hostile queries cost the service (README: Request cost).

Usage: probe_cost.py BASE_URL TOKEN. Sends fragments that double at every level and
1,000 aliases of verifyEventLog (each must be refused as VALIDATION, or the probe
fails), then times a light query alone and while two clients send the 30-level query
back to back. The last line is JSON.
"""
import json, sys, time, threading, urllib.request, urllib.error, statistics
base = sys.argv[1]; token = sys.argv[2]
def post(query, variables=None):
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(base + "/graphql", data=body, headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            out = json.loads(r.read())
    except urllib.error.HTTPError as e:
        out = json.loads(e.read())
    return time.perf_counter() - t, out
def doubling(levels):
    q = "query D { ...F0 }\n"
    for l in range(levels):
        q += f"fragment F{l} on QueryRoot {{ ...F{l+1} ...F{l+1} }}\n"
    q += f"fragment F{levels} on QueryRoot {{ environments {{ id name }} }}\n"
    return q
res = {}
for levels in (20, 22, 30):
    ts = []
    for _ in range(5):
        dt, out = post(doubling(levels)); ts.append(dt)
    res[f"doubling_{levels}_ms"] = round(statistics.median(ts)*1000, 2)
    res[f"doubling_{levels}_code"] = out["errors"][0]["extensions"]["code"]
    assert res[f"doubling_{levels}_code"] == "VALIDATION", out
aliases = "{" + "".join(f" v{n}: verifyEventLog {{ ok }}" for n in range(1000)) + " }"
ts=[]
for _ in range(5):
    dt, out = post(aliases); ts.append(dt)
res["aliases_1000_ms"] = round(statistics.median(ts)*1000, 2); res["aliases_code"] = out["errors"][0]["extensions"]["code"]
assert res["aliases_code"] == "VALIDATION", out
# light query latency alone, then while two 30-level requests arrive repeatedly
def light(n):
    ts=[]
    for _ in range(n):
        dt, out = post("{ environments { id } }"); assert "errors" not in out, out; ts.append(dt)
    return ts
alone = light(50)
stop = False
def attacker():
    while not stop:
        post(doubling(30))
ths = [threading.Thread(target=attacker) for _ in range(2)]
[t.start() for t in ths]
under = light(50)
stop = True
[t.join() for t in ths]
q = lambda xs, p: round(sorted(xs)[int(len(xs)*p)-1]*1000, 2)
res.update({"light_alone_p50_ms": q(alone,.5), "light_alone_max_ms": round(max(alone)*1000,2),
            "light_under_attack_p50_ms": q(under,.5), "light_under_attack_max_ms": round(max(under)*1000,2)})
print(json.dumps(res))
