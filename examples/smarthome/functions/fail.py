def main(args):
    return {"error": "login failed for user %r" % args.get("user", "")}
