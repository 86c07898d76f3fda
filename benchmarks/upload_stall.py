"""How long one upload holds up the rest of the server: a real `avgen serve --workers 0` (tests/test_api.py's
`serve`), a thread polling GET /healthz every 10 ms while 3 uploads of an 8192x8192 PNG are judged and stored;
the slowest /healthz answer before and during the uploads.

    python benchmarks/upload_stall.py [--out benchmarks/results/upload_stall.json]

Judging an upload (decoding it) on the event loop held up every request (event streams too) for as long as
the decode took: 0.69 s for this PNG on the 2-core dev machine; on a thread, 0.05 s.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_api import client, serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/upload_stall.json")
    args = parser.parse_args()
    buf = io.BytesIO()
    Image.new("RGB", (8192, 8192), (120, 30, 60)).save(buf, "PNG")
    png = buf.getvalue()
    with tempfile.TemporaryDirectory() as root, serve(Path(root)) as server, client(server) as c:
        seconds: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=server["url"]) as h:
                while not stop.is_set():
                    start = time.monotonic()
                    h.get("/healthz")
                    seconds.append(time.monotonic() - start)
                    time.sleep(0.01)

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.5)
        before = max(seconds)
        n_before = len(seconds)
        uploads = []
        for _ in range(3):
            start = time.monotonic()
            assert c.post("/v1/uploads", files={"file": ("big.png", png)}).status_code == 201
            uploads.append(time.monotonic() - start)
        stop.set()
        thread.join()
    result = {
        "png_bytes": len(png),
        "upload_seconds": uploads,
        "healthz_max_seconds_before": before,
        "healthz_max_seconds_during_uploads": max(seconds[n_before:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
