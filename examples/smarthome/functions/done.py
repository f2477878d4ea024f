def main(args):
    air = args.get("air")
    t = args["temperature"]["celsius"]
    if air:
        message = "%s is %.1f C: air conditioning turned on" % (args["room"], t)
    else:
        message = "%s is %.1f C: nothing to do" % (args["room"], t)
    return {"message": message, "room": args["room"], "celsius": t, "air_on": bool(air)}
