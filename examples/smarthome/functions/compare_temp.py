import specfaas


def main(args):
    # A user's own threshold wins over the bound default parameter.
    user = specfaas.kv.get("user:" + args["user"]) or {}
    threshold = user.get("threshold_celsius", args["threshold_celsius"])
    return {"hot": args["celsius"] > threshold, "celsius": args["celsius"], "threshold_celsius": threshold}
