import specfaas


def main(args):
    route = specfaas.kv.get("route:%s:%s" % (args["from"], args["to"]))
    if route is None:
        return {"error": "no route from %s to %s" % (args["from"], args["to"])}
    return route
