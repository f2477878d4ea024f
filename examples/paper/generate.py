#!/usr/bin/env python3
"""Generates the paper applications' data sets and the generated parts of their projects, from a fixed seed.

    python3 examples/paper/generate.py           # rewrite the files
    python3 examples/paper/generate.py --check   # exit 1 if a committed file differs from what this generates

Writes:
  faaschain/data/seed.json     users, accounts, flights, hotels, cars, temperature readings, stores and inventory
  trainticket/data/seed.json   stations, trips, routes, train types, prices, sold seats, food, orders
  trainticket/specfaas.toml    the five applications' functions (shared code, per-application prefix)
  alibaba/specfaas.toml        five call graphs drawn from the published Alibaba statistics
  alibaba/data/seed.json       the records the Alibaba-like functions read
"""

import hashlib
import json
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20230225  # HPCA 2023

CITIES = [  # airport, city, lat, lon
    ("JFK", "new-york", 40.71, -74.01), ("LAX", "los-angeles", 34.05, -118.24), ("ORD", "chicago", 41.88, -87.63),
    ("DFW", "dallas", 32.78, -96.80), ("DEN", "denver", 39.74, -104.99), ("SFO", "san-francisco", 37.77, -122.42),
    ("SEA", "seattle", 47.61, -122.33), ("ATL", "atlanta", 33.75, -84.39), ("BOS", "boston", 42.36, -71.06),
    ("MIA", "miami", 25.76, -80.19),
]
DATES = ["2026-12-0%d" % d for d in range(1, 6)]
USERS = 100


def luhn_card(rng):
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def faaschain(rng):
    data = {}
    airports = {a: {"city": c, "lat": la, "lon": lo} for a, c, la, lo in CITIES}
    data["airports"] = airports
    for i in range(USERS):
        a, city, la, lo = rng.choice(CITIES)
        uid = "u%03d" % i
        data["user:" + uid] = {
            "name": "User %d" % i, "pw_sha256": hashlib.sha256(("pw-%03d" % i).encode()).hexdigest(),
            "city": city, "tier": rng.choice(["gold", "silver", "basic", "basic"]),
            "lat": round(la + rng.uniform(-0.2, 0.2), 3), "lon": round(lo + rng.uniform(-0.2, 0.2), 3),
            "threshold_celsius": rng.choice([22.0, 24.0, 25.0, 26.0]), "card": luhn_card(rng),
        }
        data["account:a%03d" % i] = {"owner": uid, "balance": 10_000_000, "daily_limit": rng.choice([300, 500, 1000])}
    # FlightBook: 20 routes, two flights a day for five days; seats, hotels and cars in every city.
    routes = set()
    while len(routes) < 20:
        a, b = rng.sample([c[0] for c in CITIES], 2)
        routes.add((a, b))
    n = 0
    for a, b in sorted(routes):
        ids = []
        for date in DATES:
            for _ in range(2):
                fid = "F%04d" % n
                n += 1
                data["flight:" + fid] = {"id": fid, "date": date, "price": rng.randrange(90, 600)}
                data["seats:" + fid] = {"free": 1_000_000}
                ids.append(fid)
        data["flights:%s:%s" % (a, b)] = ids
    index = []
    for a, city, la, lo in CITIES:
        ids = []
        for k in range(4):
            hid = "H-%s-%d" % (a, k)
            lat, lon = round(la + rng.uniform(-0.1, 0.1), 4), round(lo + rng.uniform(-0.1, 0.1), 4)
            data["hotel:" + hid] = {"id": hid, "city": city, "lat": lat, "lon": lon,
                                    "price": rng.randrange(80, 400), "rating": rng.randrange(2, 6)}
            # A few hotels are sold out: HotelBook's availability branch follows the data.
            data["rooms:" + hid] = {"free": 0 if rng.random() < 0.15 else 1_000_000}
            index.append({"id": hid, "lat": lat, "lon": lon})
            ids.append(hid)
        data["hotels:" + city] = ids
        data["cars:" + city] = {"free": 1_000_000, "price": rng.randrange(30, 120)}
    data["hotels:index"] = index
    # SmartH: 20 homes with four rooms each; readings in Fahrenheit as NOAA reports them.
    for h in range(20):
        base = rng.uniform(62, 84)
        for room in ("living", "bedroom", "kitchen", "office"):
            readings = [round(base + rng.uniform(-6, 6), 1) for _ in range(6)]
            data["temp:h%02d:%s" % (h, room)] = {"unit": "F", "readings": readings}
    # OnlPurch: 50 items, 10 stores; some items are out of stock in some stores.
    for i in range(50):
        data["item:i%03d" % i] = {"name": "Item %d" % i, "price": round(rng.uniform(2, 200), 2)}
    stores = []
    for s in range(10):
        a, city, la, lo = CITIES[s % len(CITIES)]
        sid = "s%02d" % s
        lat, lon = round(la + rng.uniform(-0.3, 0.3), 3), round(lo + rng.uniform(-0.3, 0.3), 3)
        data["store:" + sid] = {"id": sid, "city": city, "lat": lat, "lon": lon,
                                "tax_rate": rng.choice([0.0, 0.05, 0.0725, 0.0875])}
        stores.append({"id": sid, "lat": lat, "lon": lon})
        for i in range(50):
            data["stock:%s:i%03d" % (sid, i)] = {"free": 0 if rng.random() < 0.2 else 1_000_000}
    data["stores:index"] = stores
    return data


STATIONS = ["shanghai", "beijing", "nanjing", "suzhou", "hangzhou", "wuxi", "jinan", "taiyuan", "shijiazhuang",
            "tianjin", "xian", "wuhan", "changsha", "guangzhou", "shenzhen", "hefei", "zhengzhou", "qingdao",
            "xiamen", "fuzhou"]

# TrainTicket applications: (name, prefix, entry, {function: entry point}).
SERVICES = {"station": "station", "trip_ids": "trip_ids", "trip": "trip", "route": "route", "train_type": "train_type",
            "price": "price", "config": "config", "distance": "distance", "sold": "sold",
            "seat_config": "seat_config", "arrival": "arrival", "basic": "basic", "left": "left"}
TRAIN_APPS = [
    ("tcktapp", "tk_", "query", dict(SERVICES, query="query", ticket="ticket")),
    ("tripinfapp", "ti_", "plan", dict(SERVICES, plan="plan", detail="detail", food="food", food_store="food_store",
                                       train_food="train_food", stops="stops", station_names="station_names",
                                       user_info="user_info", contacts="contacts", assurance="assurance",
                                       consign_price="consign_price")),
    ("querytrvl", "qt_", "travel", {f: f for f in ("station", "trip_ids", "trip", "route", "train_type", "price",
                                                     "distance")} | {"travel": "travel"}),
    ("getleftapp", "gl_", "left_query", {"left_query": "left_query", "left": "left_simple", "trip": "trip",
                                          "sold": "sold", "train_type": "train_type"}),
    ("cancelapp", "ca_", "cancel", {"cancel": "cancel", "get_order": "get_order", "refund": "refund",
                                    "update_order": "update_order"}),
]


def trainticket(rng):
    data = {}
    ids = ["st%02d" % i for i in range(len(STATIONS))]
    for sid, name in zip(ids, STATIONS):
        data["station:" + name] = {"id": sid, "name": name, "stay_min": rng.choice([2, 3, 5])}
        data["station_name:" + sid] = name
        data["food_store:" + sid] = [{"name": "%s snack %d" % (name, k), "price": rng.randrange(5, 40)}
                                     for k in range(3)]
    for t in range(4):
        data["train_type:T%d" % t] = {"id": "T%d" % t, "economy": rng.choice([600, 800, 1000]),
                                     "comfort": rng.choice([100, 150, 200]), "speed": rng.choice([160, 250, 300, 350])}
    pairs = set()
    while len(pairs) < 30:
        pairs.add(tuple(rng.sample(ids, 2)))
    n = 0
    for r, (a, b) in enumerate(sorted(pairs)):
        rid = "R%02d" % r
        middle = rng.sample([i for i in ids if i not in (a, b)], rng.randrange(1, 4))
        stations = [a] + middle + [b]
        km = [0]
        for _ in stations[1:]:
            km.append(km[-1] + rng.randrange(80, 400))
        data["route:" + rid] = {"id": rid, "stations": stations, "distances": km}
        trips = []
        for k in range(2):
            tid = "G%03d" % n
            n += 1
            ttype = "T%d" % rng.randrange(4)
            data["trip:" + tid] = {"id": tid, "route": rid, "type": ttype,
                                   "start": "%02d:%02d" % (rng.randrange(6, 21), rng.choice([0, 15, 30, 45]))}
            data["train_food:" + tid] = [{"name": "meal %d" % k, "price": rng.randrange(20, 60)} for k in range(2)]
            for date in DATES:
                data["sold:%s:%s" % (tid, date)] = {"economy": rng.randrange(0, 300), "comfort": rng.randrange(0, 50)}
            trips.append(tid)
        data["trips:%s:%s" % (a, b)] = trips
        for t in range(4):
            data["price:%s:T%d" % (rid, t)] = {"economy": round(rng.uniform(0.3, 0.6), 2),
                                              "comfort": round(rng.uniform(0.8, 1.4), 2)}
    data["config:price_factor"] = 1.05
    data["config:direct_ratio"] = 0.5
    data["assurance:types"] = [{"name": "traffic accident", "price": 3.0}]
    data["consign:price"] = {"initial_kg": 5, "initial_price": 8.0, "per_kg": 2.0}
    trips = sorted(k[5:] for k in data if k.startswith("trip:"))
    for i in range(USERS):
        uid = "u%03d" % i
        data["contacts:" + uid] = [{"name": "Contact %d-%d" % (i, k), "document": "ID%06d" % rng.randrange(10**6)}
                                   for k in range(rng.randrange(1, 3))]
    for o in range(500):
        data["order:o%04d" % o] = {"user": "u%03d" % rng.randrange(USERS), "trip": rng.choice(trips),
                                   "date": rng.choice(DATES), "price": round(rng.uniform(50, 900), 2),
                                   "seat_class": rng.choice(["economy", "comfort"]), "status": "paid", "refund": 0}
    return data


def work_times(rng, n, mean):
    """n execution times around mean (log-normal, clamped), rescaled so their mean is exactly mean."""
    raw = [min(max(rng.lognormvariate(0, 0.4), 0.3), 3.0) for _ in range(n)]
    scale = mean * n / sum(raw)
    times = [max(1, round(x * scale)) for x in raw]
    times[0] += mean * n - sum(times)
    return times


def trainticket_manifest(rng):
    out = ["""# TrainTicket: five applications of the serverless TrainTicket flows (SpecFaaS paper, Table II), implicit
# workflows. GENERATED by ../generate.py from the table in it: do not edit by hand.
#
# Shared services are one entry point of functions/trainticket.py, deployed once per application under its prefix.
# `work_ms` averages 24 ms (Fig. 3); `cpu_share` of it is CPU work. Invoke, for example:
#   specfaas run examples/paper/trainticket tcktapp --input '{"from": "shanghai", "to": "beijing", "date": "2026-12-01"}'

[project]
seed = "data/seed.json"
"""]
    functions = [(p + f, main, p) for _, p, _, fns in TRAIN_APPS for f, main in sorted(fns.items())]
    times = work_times(rng, len(functions), 24)
    for (name, main, prefix), ms in zip(functions, times):
        out.append('[functions.%s]\nkind = "python:3"\ncode = "functions/trainticket.py"\nmain = "%s"\n'
                   'parameters = { prefix = "%s", work_ms = %d, cpu_share = 0.1 }\n' % (name, main, prefix, ms))
    for app, prefix, entry, _ in TRAIN_APPS:
        out.append('[apps.%s]\nfunction = "%s%s"\n' % (app, prefix, entry))
    return "\n".join(out)


# Alibaba-like: five call graphs drawn from the published statistics (SpecFaaS Table I, from Luo et al., SoCC'21):
# 17.6 functions per application on average, depth at most 5, 3.4 callees per calling function on average.
ALIBABA_SIZES = [13, 16, 18, 19, 22]  # mean 17.6
ALIBABA_DEPTH = 5


def alibaba_graph(rng, size):
    """A call tree of `size` functions, at most ALIBABA_DEPTH levels deep; callers get 2-5 callees (mean 3.4)."""
    children = {0: []}
    depth = {0: 1}
    frontier = [0]
    n = 1
    while n < size:
        candidates = [f for f in frontier if depth[f] < ALIBABA_DEPTH]
        parent = candidates[0]
        frontier.remove(parent)
        k = min(rng.choice([2, 3, 3, 4, 5]), size - n)
        for _ in range(k):
            children[parent].append(n)
            children[n] = []
            depth[n] = depth[parent] + 1
            frontier.append(n)
            n += 1
        rng.shuffle(frontier)
    return children, depth


def alibaba(rng):
    out = ["""# Alibaba-like: five implicit-workflow applications drawn by ../generate.py from the published statistics of
# Alibaba's production call graphs (17.6 functions per application, depth <= 5, 3.4 callees per calling function;
# SpecFaaS Table I). GENERATED: do not edit by hand.
#
# Every function runs functions/alibaba.py's `node`: it spends `work_ms` (about 22 ms on average, Fig. 3), reads a
# record when `reads` is set, and calls its `callees` in order. A callee marked `rare` is called for about one key
# in ten: the synthetic minority path (the most popular call sequence covers about 90% of invocations).
# Invoke, for example:
#   specfaas run examples/paper/alibaba ali1 --input '{"key": 7}'

[project]
seed = "data/seed.json"
"""]
    apps = []
    for a, size in enumerate(ALIBABA_SIZES, start=1):
        children, depth = alibaba_graph(rng, size)
        times = work_times(rng, size, 22)
        names = {f: "ali%d_f%02d" % (a, f) for f in children}
        callers = [f for f in children if children[f]]
        rare_parent = rng.choice(callers)
        for f in sorted(children):
            callees = []
            for i, c in enumerate(children[f]):
                arg = rng.choice(["same", "same", "derived", "const"])
                entry = {"name": names[c], "arg": arg}
                if f == rare_parent and i == len(children[f]) - 1:
                    entry["rare"] = True
                callees.append(entry)
            params = {"work_ms": times[f], "cpu_share": 0.1, "reads": rng.random() < 0.5, "callees": callees}
            out.append('[functions.%s]\nkind = "python:3"\ncode = "functions/alibaba.py"\nmain = "node"\n'
                       "parameters = %s\n" % (names[f], toml_inline(params)))
        apps.append('[apps.ali%d]\nfunction = "%s"\n' % (a, names[0]))
    return "\n".join(out + apps)


def toml_inline(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    return "{ " + ", ".join("%s = %s" % (k, toml_inline(v)) for k, v in value.items()) + " }"


def files():
    rng = random.Random(SEED)
    yield "faaschain/data/seed.json", dump(faaschain(rng))
    yield "trainticket/data/seed.json", dump(trainticket(rng))
    yield "trainticket/specfaas.toml", trainticket_manifest(rng)
    yield "alibaba/specfaas.toml", alibaba(rng)
    yield "alibaba/data/seed.json", dump({"record:%d" % k: {"k": k, "v": (k * 2654435761) % 1000} for k in range(100)})


def dump(data):
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in files():
        full = os.path.join(HERE, path)
        if check:
            try:
                same = open(full).read() == text
            except FileNotFoundError:
                same = False
            if not same:
                stale.append(path)
        else:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
    if stale:
        sys.exit("out of date (run python3 examples/paper/generate.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
