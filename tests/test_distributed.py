"""torchrun + DDP on the CPU (gloo): two processes train a few steps and must end
with identical weights, rank 0 alone writing files."""

import json
import os
import socket
import subprocess
import sys

from test_training import tiny_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_keeps_replicas_identical(tmp_path):
    cfg = tiny_config(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "facepoints.cli", "train", str(cfg), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    assert last["world_size"] == 2 and last["replicas_identical"] is True and last["step"] >= 2
    # one log line per epoch from rank 0 only (not two)
    epochs = [rec["epoch"] for rec in records if "epoch" in rec]
    assert epochs == sorted(set(epochs))
    assert (tmp_path / "run" / "final.safetensors").is_file()
