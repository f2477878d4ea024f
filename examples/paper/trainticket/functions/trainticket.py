"""TrainTicket: the serverless TrainTicket flows of the SpecFaaS paper (Table II), as implicit workflows in Python.

Functions call functions with `specfaas.invoke`, as the ported TrainTicket microservices do: a gather function
calls services for stations, trips, routes, train types, prices, seats and orders, and aggregates what they
return. Services shared by several applications are one entry point of this file, deployed once per application
under the application's prefix (the bound parameter `prefix`, such as `tk_`), so each application has its own
functions as in the paper's counts. Every function first spends its declared execution time (`work_ms`, about
24 ms on average, Fig. 3), `cpu_share` of it as CPU work and the rest waiting on a remote service.
"""

import time

import specfaas


def work(args):
    """Spends the declared execution time: CPU first (in CPU time), then a wait on a remote service."""
    ms = float(args.get("work_ms", 24))
    cpu_ms = ms * float(args.get("cpu_share", 0.1))
    end = time.thread_time() + cpu_ms / 1000
    x = 0
    while time.thread_time() < end:
        x += 1
    time.sleep(max(ms - cpu_ms, 0) / 1000)


def call(args, service, payload):
    """Calls this application's instance of a service."""
    return specfaas.invoke(args["prefix"] + service, payload)


# ---- services: one store read each, or pure computation ------------------------------------------------------


def station(args):
    work(args)
    return specfaas.kv.get("station:" + args["name"])


def trip_ids(args):
    work(args)
    return {"trips": specfaas.kv.get("trips:%s:%s" % (args["from"], args["to"])) or []}


def trip(args):
    work(args)
    return specfaas.kv.get("trip:" + args["trip"])


def route(args):
    work(args)
    return specfaas.kv.get("route:" + args["route"])


def train_type(args):
    work(args)
    return specfaas.kv.get("train_type:" + args["type"])


def config(args):
    work(args)
    return {"value": specfaas.kv.get("config:" + args["name"])}


def price(args):
    """Price rates of a route on a train type; with `with_config`, scaled by the configured rate factor."""
    work(args)
    rates = specfaas.kv.get("price:%s:%s" % (args["route"], args["type"]))
    factor = call(args, "config", {"name": "price_factor"})["value"] if args.get("with_config") else 1.0
    return {"economy": round(rates["economy"] * factor, 2), "comfort": round(rates["comfort"] * factor, 2)}


def distance(args):
    work(args)
    stations, km = args["stations"], args["distances"]
    i = stations.index(args["from"]) if args["from"] in stations else 0
    j = stations.index(args["to"]) if args["to"] in stations else len(stations) - 1
    return {"km": abs(km[j] - km[i])}


def sold(args):
    work(args)
    return specfaas.kv.get("sold:%s:%s" % (args["trip"], args["date"])) or {"economy": 0, "comfort": 0}


def seat_config(args):
    work(args)
    ratio = call(args, "config", {"name": "direct_ratio"})["value"]
    return {"ratio": ratio}


def arrival(args):
    work(args)
    h, m = map(int, args["start"].split(":"))
    minutes = h * 60 + m + int(args["km"] / args["speed"] * 60)
    return {"arrival": "%02d:%02d" % (minutes // 60 % 24, minutes % 60)}


# ---- compositions ------------------------------------------------------------------------------------------------


def basic(args):
    """Route, train type, prices and distance of a trip between two stations."""
    work(args)
    r = call(args, "route", {"route": args["route"]})
    t = call(args, "train_type", {"type": args["type"]})
    p = call(args, "price", {"route": args["route"], "type": args["type"], "with_config": True})
    d = call(args, "distance", {"stations": r["stations"], "distances": r["distances"], "from": args["from"],
                                "to": args["to"]})
    return {"km": d["km"], "speed": t["speed"], "economy_price": round(p["economy"] * d["km"], 2),
            "comfort_price": round(p["comfort"] * d["km"], 2), "capacity": t["economy"] + t["comfort"]}


def left(args):
    """Seats left on a trip on a date (TcktApp and TripInfApp: with the configured direct-sale ratio)."""
    work(args)
    s = call(args, "sold", {"trip": args["trip"], "date": args["date"]})
    ratio = call(args, "seat_config", {"type": args["type"]})["ratio"]
    return {"economy": int(args["economy"] * ratio) - s["economy"], "comfort": int(args["comfort"] * ratio) - s["comfort"]}


def ticket(args):
    """Everything about one trip for a query: TcktApp's per-trip gather."""
    work(args)
    t = call(args, "trip", {"trip": args["trip"]})
    b = call(args, "basic", {"route": t["route"], "type": t["type"], "from": args["from"], "to": args["to"]})
    seats = call(args, "left", {"trip": args["trip"], "date": args["date"], "type": t["type"],
                                "economy": b["capacity"] // 2, "comfort": b["capacity"] // 2})
    a = call(args, "arrival", {"start": t["start"], "km": b["km"], "speed": b["speed"]})
    return {"trip": args["trip"], "start": t["start"], "arrival": a["arrival"], "economy_price": b["economy_price"],
            "comfort_price": b["comfort_price"], "left": seats}


def query(args):
    """TcktApp's entry: all tickets between two stations on a date."""
    work(args)
    origin = call(args, "station", {"name": args["from"]})
    dest = call(args, "station", {"name": args["to"]})
    trips = call(args, "trip_ids", {"from": origin["id"], "to": dest["id"]})["trips"]
    return {"tickets": [call(args, "ticket", {"trip": t, "date": args["date"], "from": origin["id"],
                                              "to": dest["id"]}) for t in trips]}


def food(args):
    work(args)
    store = call(args, "food_store", {"station": args["station"]})
    onboard = call(args, "train_food", {"trip": args["trip"]})
    return {"food": sorted(store["food"] + onboard["food"], key=lambda f: f["price"])[:5]}


def food_store(args):
    work(args)
    return {"food": specfaas.kv.get("food_store:" + args["station"]) or []}


def train_food(args):
    work(args)
    return {"food": specfaas.kv.get("train_food:" + args["trip"]) or []}


def stops(args):
    work(args)
    return {"stops": call(args, "station_names", {"ids": args["stations"]})["names"]}


def station_names(args):
    work(args)
    return {"names": [specfaas.kv.get("station_name:" + i) for i in args["ids"]]}


def detail(args):
    """TripInfApp's per-trip gather: a ticket plus food and stops."""
    work(args)
    t = call(args, "trip", {"trip": args["trip"]})
    b = call(args, "basic", {"route": t["route"], "type": t["type"], "from": args["from"], "to": args["to"]})
    seats = call(args, "left", {"trip": args["trip"], "date": args["date"], "type": t["type"],
                                "economy": b["capacity"] // 2, "comfort": b["capacity"] // 2})
    meals = call(args, "food", {"trip": args["trip"], "station": args["from"]})
    r = call(args, "route", {"route": t["route"]})
    s = call(args, "stops", {"stations": r["stations"]})
    a = call(args, "arrival", {"start": t["start"], "km": b["km"], "speed": b["speed"]})
    return {"trip": args["trip"], "arrival": a["arrival"], "price": b["economy_price"], "left": seats,
            "food": meals["food"], "stops": s["stops"]}


def contacts(args):
    work(args)
    return {"contacts": specfaas.kv.get("contacts:" + args["user"]) or []}


def assurance(args):
    work(args)
    return {"types": specfaas.kv.get("assurance:types")}


def consign_price(args):
    work(args)
    return specfaas.kv.get("consign:price")


def user_info(args):
    work(args)
    return {"contacts": call(args, "contacts", {"user": args["user"]})["contacts"],
            "assurance": call(args, "assurance", {})["types"], "consign": call(args, "consign_price", {})}


def plan(args):
    """TripInfApp's entry: the trips between two stations with details, and the traveller's options."""
    work(args)
    origin = call(args, "station", {"name": args["from"]})
    dest = call(args, "station", {"name": args["to"]})
    trips = call(args, "trip_ids", {"from": origin["id"], "to": dest["id"]})["trips"]
    details = [call(args, "detail", {"trip": t, "date": args["date"], "from": origin["id"], "to": dest["id"]})
               for t in trips]
    return {"trips": details, "traveller": call(args, "user_info", {"user": args["user"]})}


def travel(args):
    """QueryTrvl's entry: travel information (times, distance, prices) between two stations."""
    work(args)
    origin = call(args, "station", {"name": args["from"]})
    dest = call(args, "station", {"name": args["to"]})
    out = []
    for t in call(args, "trip_ids", {"from": origin["id"], "to": dest["id"]})["trips"]:
        tr = call(args, "trip", {"trip": t})
        r = call(args, "route", {"route": tr["route"]})
        ty = call(args, "train_type", {"type": tr["type"]})
        p = call(args, "price", {"route": tr["route"], "type": tr["type"]})
        d = call(args, "distance", {"stations": r["stations"], "distances": r["distances"], "from": origin["id"],
                                    "to": dest["id"]})
        out.append({"trip": t, "km": d["km"], "hours": round(d["km"] / ty["speed"], 2),
                    "price": round(p["economy"] * d["km"], 2)})
    return {"travel": out}


def left_simple(args):
    """GetLeftApp's per-trip count: capacity of the train type minus tickets sold."""
    work(args)
    t = call(args, "trip", {"trip": args["trip"]})
    s = call(args, "sold", {"trip": args["trip"], "date": args["date"]})
    ty = call(args, "train_type", {"type": t["type"]})
    return {"trip": args["trip"], "economy": ty["economy"] - s["economy"], "comfort": ty["comfort"] - s["comfort"]}


def left_query(args):
    """GetLeftApp's entry: unsold tickets of some trips on a date."""
    work(args)
    return {"left": [call(args, "left", {"trip": t, "date": args["date"]}) for t in args["trips"]]}


def get_order(args):
    work(args)
    order = specfaas.kv.get("order:" + args["order"])
    return {k: order[k] for k in ("user", "trip", "date", "price", "seat_class")} if order else None


def refund(args):
    """The refund for cancelling: 80% of the price (a fixed policy)."""
    work(args)
    return {"refund": round(args["price"] * 0.8, 2)}


def update_order(args):
    """Marks an order cancelled; idempotent, so cancelling twice gives the same answer."""
    work(args)
    key = "order:" + args["order"]
    order = specfaas.kv.get(key)
    if order["status"] != "cancelled":
        order["status"] = "cancelled"
        order["refund"] = args["refund"]
        specfaas.kv.put(key, order)
    return {"status": "cancelled", "refund": order["refund"]}


def cancel(args):
    """CancelApp's entry: cancel an order and refund it."""
    work(args)
    order = call(args, "get_order", {"order": args["order"]})
    if order is None or order["user"] != args["user"]:
        return {"error": "no such order for this user"}
    r = call(args, "refund", {"price": order["price"], "date": order["date"]})
    return call(args, "update_order", {"order": args["order"], "refund": r["refund"]})
