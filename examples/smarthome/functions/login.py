import specfaas


def main(args):
    user = args.get("user", "")
    record = specfaas.kv.get("user:" + user)
    ok = record is not None and record.get("password") == args.get("password")
    print("login %s for %r" % ("accepted" if ok else "refused", user))
    return {"ok": ok, "user": user}
