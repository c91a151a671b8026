"""Probes what hostile queries cost the service (README: Request cost).

Usage: probe_cost.py BASE_URL TOKEN [--smoke]. Sends fragments that double at every
level and 1,000 aliases of verifyEventLog (each must be refused as VALIDATION, or the
probe fails), then times a light query alone and while two clients send the 30-level
query back to back. The last line is JSON. --smoke: every query, fewer repetitions.
"""
import json, sys, time, threading, urllib.request, urllib.error, statistics
args = [a for a in sys.argv[1:] if a != "--smoke"]
smoke = "--smoke" in sys.argv[1:]
base = args[0]; token = args[1]
REPEAT, LIGHT = (2, 10) if smoke else (5, 50)
def check(ok, what):
    """A failed check: the JSON (ok false, the problem), the problem on stderr, exit 1."""
    if not ok:
        print(f"probe_cost FAILED: {what}", file=sys.stderr)
        print(json.dumps({"benchmark": "probe_cost", "smoke": smoke, "ok": False, "problems": [what]}))
        sys.exit(1)
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
    for _ in range(REPEAT):
        dt, out = post(doubling(levels)); ts.append(dt)
    res[f"doubling_{levels}_ms"] = round(statistics.median(ts)*1000, 2)
    res[f"doubling_{levels}_code"] = (out.get("errors") or [{}])[0].get("extensions", {}).get("code")
    check(res[f"doubling_{levels}_code"] == "VALIDATION", f"{levels} levels of doubling fragments not refused: {str(out)[:300]}")
aliases = "{" + "".join(f" v{n}: verifyEventLog {{ ok }}" for n in range(1000)) + " }"
ts=[]
for _ in range(REPEAT):
    dt, out = post(aliases); ts.append(dt)
res["aliases_1000_ms"] = round(statistics.median(ts)*1000, 2); res["aliases_code"] = (out.get("errors") or [{}])[0].get("extensions", {}).get("code")
check(res["aliases_code"] == "VALIDATION", f"1,000 aliases not refused: {str(out)[:300]}")
# light query latency alone, then while two 30-level requests arrive repeatedly
def light(n):
    ts=[]
    for _ in range(n):
        dt, out = post("{ environments { id } }"); check("errors" not in out, f"the light query failed: {str(out)[:300]}"); ts.append(dt)
    return ts
alone = light(LIGHT)
stop = False
def attacker():
    while not stop:
        post(doubling(30))
ths = [threading.Thread(target=attacker, daemon=True) for _ in range(2)]
[t.start() for t in ths]
under = light(LIGHT)
stop = True
[t.join() for t in ths]
q = lambda xs, p: round(sorted(xs)[int(len(xs)*p)-1]*1000, 2)
res.update({"light_alone_p50_ms": q(alone,.5), "light_alone_max_ms": round(max(alone)*1000,2),
            "light_under_attack_p50_ms": q(under,.5), "light_under_attack_max_ms": round(max(under)*1000,2)})
res.update({"benchmark": "probe_cost", "smoke": smoke, "ok": True, "problems": []})
print(json.dumps(res))
