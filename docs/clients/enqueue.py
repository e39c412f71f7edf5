"""Enqueue a wasmq task through `wasmq serve`'s API and wait for its result (Python, requests).

    python3 enqueue.py http://127.0.0.1:8080 MODULE INPUT [QUEUE]
WASMQ_TOKEN in the environment is sent as the bearer token.
"""
import os
import sys

import requests


def main():
    base, module, text = sys.argv[1], sys.argv[2], sys.argv[3]
    queue = sys.argv[4] if len(sys.argv) > 4 else "default"
    headers = {}
    if os.environ.get("WASMQ_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["WASMQ_TOKEN"]
    r = requests.post(f"{base}/v1/queues/{queue}/tasks", json={"module": module, "input": text}, headers=headers, timeout=30)
    r.raise_for_status()
    task_id = r.json()["id"]
    # Long-poll: the server answers as soon as the task finishes (or after 30 s).
    for _ in range(10):
        t = requests.get(f"{base}/v1/tasks/{task_id}", params={"wait": "30s"}, headers=headers, timeout=40).json()
        if t["state"] in ("succeeded", "dead", "cancelled"):
            break
    if t["state"] != "succeeded":
        print(f"task {task_id} ended {t['state']}: {t.get('error')}", file=sys.stderr)
        sys.exit(1)
    print(t["output_text"] if t["output_text"] is not None else t["output_base64"])


if __name__ == "__main__":
    main()
