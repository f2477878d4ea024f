import specfaas


def main(args):
    origin, destination, rider = args["from"], args["to"], args["rider"]
    trains = specfaas.invoke("find_trains", {"from": origin, "to": destination})
    for train in trains["trains"]:
        try:
            seat = specfaas.invoke("reserve_seat", {"train": train, "rider": rider})
        except specfaas.InvokeError as e:
            print("no seat on %s: %s" % (train, e.error))
            continue
        price = specfaas.invoke("quote", {"distance_km": trains["distance_km"], "age": args.get("age", 30)})
        return {"rider": rider, "train": train, "seat": seat["seat"], "price_eur": price["price_eur"]}
    return {"error": "no seats left from %s to %s" % (origin, destination)}
