import specfaas


def main(args):
    train, rider = args["train"], args["rider"]
    left = specfaas.kv.get("seats:" + train) or 0
    if left <= 0:
        return {"error": "train %s is full" % train}
    specfaas.kv.put("seats:" + train, left - 1)
    seat = "%s-%d" % (train, left)
    specfaas.kv.put("booking:%s:%s" % (rider, train), {"seat": seat})
    return {"seat": seat}
