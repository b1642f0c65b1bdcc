"""How long a thread waits for a lock that another thread holds while it sleeps, re-taking it at once.

gradio_client's Job.__next__ (2.x) polls for the next streamed output with `with lock: ...; time.sleep(0.001)`,
and the thread that reads the server's stream needs the same lock to append each output. This reproduces the
pattern with nothing else running: one thread spins as the iterator does, another takes the lock every 20 ms as
the reader would. Its waits are the delays the studio benchmark saw between an update reaching the client and
the client's loop getting it (benchmarks/app_gpu.md, sixth session).

    python3 benchmarks/client_lock_starvation.py [--sleep-outside]
"""

import argparse
import statistics
import threading
import time


def spin(lock: threading.Lock, stop: threading.Event, outside: bool):
    while not stop.is_set():
        with lock:
            if not outside:
                time.sleep(0.001)  # gradio_client's placement: the lock stays held while it sleeps
        if outside:
            time.sleep(0.001)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep-outside", action="store_true", help="the spinning thread sleeps after releasing")
    parser.add_argument("--takes", type=int, default=100)
    args = parser.parse_args()
    lock, stop, waits = threading.Lock(), threading.Event(), []
    spinner = threading.Thread(target=spin, args=(lock, stop, args.sleep_outside))
    spinner.start()
    for _ in range(args.takes):
        time.sleep(0.02)
        start = time.perf_counter()
        with lock:
            waits.append(time.perf_counter() - start)
    stop.set()
    spinner.join()
    where = "outside" if args.sleep_outside else "inside"
    print(f"sleep {where} the lock: the reader's wait median {statistics.median(waits) * 1e3:.2f} ms, "
          f"max {max(waits) * 1e3:.1f} ms over {len(waits)} takes")


if __name__ == "__main__":
    main()
