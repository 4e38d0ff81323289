"""Detector alone: ``giftguard backtest`` over the simulated Square envelopes, no Kafka."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.common import ROOT, log


@dataclass
class DetectorRun:
    events: int
    detector_eps: float      # inside the engine (card scope + entity scope), as backtest reports
    end_to_end_eps: float    # reading, parsing and normalizing the file included
    mean_card_state_bytes: float
    max_card_state_bytes: int
    alerts: int


def backtest(events: Path, locations: Path, workdir: Path) -> DetectorRun:
    workdir.mkdir(parents=True, exist_ok=True)
    metrics = workdir / "backtest-metrics.json"
    subprocess.run([sys.executable, "-m", "streams.cli", "backtest", str(events),
                    "--out", str(workdir / "backtest-alerts.jsonl"), "--locations",
                    str(locations), "--metrics-json", str(metrics), "--no-progress"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    m = orjson.loads(metrics.read_bytes())
    run = DetectorRun(m["events"], m["detector_events_per_second"], m["events_per_second"],
                      m["mean_card_state_bytes"], m["max_card_state_bytes"], m["alerts"])
    log(f"backtest: {run.detector_eps:,.0f} ev/s in the detector, {run.end_to_end_eps:,.0f} "
        f"ev/s end to end, {run.mean_card_state_bytes:.0f} B mean card state")
    return run
