import specfaas


def main(args):
    room = args.get("room", "living")
    sensor = specfaas.kv.get("temp:" + room)
    if sensor is None:
        return {"error": "no temperature sensor in room %r" % room}
    return {"room": room, "unit": sensor["unit"], "readings": sensor["readings"]}
