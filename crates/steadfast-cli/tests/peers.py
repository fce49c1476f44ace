"""Foreign WebSocket peers for the proxy tests (Python `websockets`).

  peers.py echo-server LOGFILE [SUBPROTOCOL]
      Listen on a free loopback port (selecting SUBPROTOCOL when a client
      offers it, as servers that take the first offer do), print `ready PORT`, echo every
      message; log each received one as a JSON line {"conn", "type",
      "data" | "hex"} (connections numbered from 1 in accept order).
  peers.py client URL COUNT SEED
      Send COUNT messages (text and binary, seeded sizes up to 256 KiB, one
      of 1 MiB), all at once, then read the echoes; print one JSON line
      {"sent": [[type, size, sha256]...], "bad": N} and exit 0 only when
      every echo came back identical and in order.
"""

import asyncio
import hashlib
import itertools
import json
import random
import sys

import websockets


def describe(message):
    kind = "text" if isinstance(message, str) else "binary"
    raw = message.encode() if kind == "text" else message
    return [kind, len(raw), hashlib.sha256(raw).hexdigest()]


async def echo_server(log_path, subprotocol=None):
    counter = itertools.count(1)
    log = open(log_path, "w", buffering=1)

    async def handler(socket):
        conn = next(counter)
        async for message in socket:
            if isinstance(message, str):
                log.write(json.dumps({"conn": conn, "type": "text", "data": message}) + "\n")
            else:
                log.write(json.dumps({"conn": conn, "type": "binary", "hex": message.hex()}) + "\n")
            await socket.send(message)

    subprotocols = [subprotocol] if subprotocol else None
    async with websockets.serve(
        handler, "127.0.0.1", 0, max_size=None, subprotocols=subprotocols
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"ready {port}", flush=True)
        await asyncio.Future()


def messages(count, seed):
    rng = random.Random(seed)
    out = []
    for i in range(count):
        if i == count // 2:
            out.append(rng.randbytes(1 << 20))
        elif rng.random() < 0.5:
            size = rng.choice([0, 1, 100, 5000, 70000])
            out.append(f"m{i} " + "".join(rng.choice("abcdefé€😀") for _ in range(size)))
        else:
            out.append(rng.randbytes(rng.choice([1, 125, 126, 65535, 65536, 262144])))
    return out


async def client(url, count, seed):
    sent = messages(count, seed)
    bad = 0
    async with websockets.connect(url, max_size=None) as socket:
        for message in sent:
            await socket.send(message)
        for message in sent:
            echo = await asyncio.wait_for(socket.recv(), 30)
            if echo != message:
                bad += 1
    print(json.dumps({"sent": [describe(m) for m in sent], "bad": bad}), flush=True)
    return 0 if bad == 0 else 1


def main():
    if sys.argv[1] == "echo-server":
        asyncio.run(echo_server(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    elif sys.argv[1] == "client":
        sys.exit(asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")


if __name__ == "__main__":
    main()
