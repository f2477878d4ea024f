import specfaas


def main(args):
    state = {"on": True, "target_celsius": args["target_celsius"]}
    specfaas.kv.put("ac:" + args["room"], state)
    print("air conditioning on in %s, target %.1f C" % (args["room"], args["target_celsius"]))
    return state
