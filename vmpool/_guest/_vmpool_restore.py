"""After a microVM snapshot restore: the guest's clock and kernel RNG set from the host
(shared by the grading agent and the session supervisor; stdlib only)."""

import fcntl
import struct
import time

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)


def resume(req):
    """After a snapshot restore every clone holds the template's clock and RNG state:
    set the clock from the host and mix fresh host entropy into the kernel RNG (then
    force a reseed), so no two clones share random numbers. Children reseed Python's
    ``random`` from the kernel at fork."""
    import random

    done = {}
    try:
        time.clock_settime(time.CLOCK_REALTIME, float(req["time"]))
        done["clock"] = True
    except (OSError, KeyError, ValueError) as exc:
        done["clock"] = f"{exc}"
    try:
        seed = bytes.fromhex(req["seed"])
        with open("/dev/urandom", "wb", buffering=0) as fh:
            try:
                info = struct.pack("ii", len(seed) * 8, len(seed)) + seed
                fcntl.ioctl(fh.fileno(), RNDADDENTROPY, info)
                fcntl.ioctl(fh.fileno(), RNDRESEEDCRNG)
            except OSError:  # not root (namespace sandbox): plain mixing still helps
                fh.write(seed)
        random.seed(seed)
        done["rng"] = True
    except (OSError, KeyError, ValueError) as exc:
        done["rng"] = f"{exc}"
    return done
