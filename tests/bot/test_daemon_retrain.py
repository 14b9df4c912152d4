"""The daemon's scheduled LSTM retraining: runs on the simulated clock, never blocks the hourly cycle.

Real parts throughout (the simulated market, paper venues, a SQLite ledger, the real ``lstm``
forecaster, small). The one instrument is a gate in front of the forecaster's ``fit`` that holds
the training thread until the test has seen cycles finish: it makes "the cycle goes on while
training runs" observable without depending on how fast this machine trains.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from bot.clock import SimulatedClock
from bot.config import parse_config
from bot.cycle import Engine
from bot.daemon import Daemon
from bot.ledger import Ledger
from tests.conftest import START, paper_dict

LSTM = {
    "window_hours": 8, "hidden": 4, "epochs": 2, "patience": 1, "batch_size": 128, "vol_model": "ewma",
    "train_hours": 300, "min_train_hours": 200, "retrain_every_hours": 4,
}  # fmt: skip


def lstm_config(tmp_path: Path, **options: object) -> dict:
    # an hourly risk monitor instead of every 5 minutes: fewer forecasts, same schedule logic
    return paper_dict(
        tmp_path, forecaster={"plugin": "lstm", "options": {**LSTM, **options}}, schedule={"monitor_minutes": 60}
    )


def test_retrain_job_runs_on_the_simulated_clock_and_cycles_go_on_while_it_trains(tmp_path: Path) -> None:
    cfg = parse_config(lstm_config(tmp_path), "test")
    begin = START + timedelta(days=40, minutes=10)
    engine = Engine(cfg, clock=SimulatedClock(begin, 0.0))
    fc = engine.c.forecaster
    real_fit, real_forecast = fc.fit, fc.forecast
    gate, training = threading.Event(), threading.Event()
    fits: list[int] = []
    models: list[tuple[object, str]] = []
    during: list[str] = []

    def gated_fit(assets, returns, **kw):  # noqa: ANN001, ANN003, ANN202
        fits.append(len(returns))
        training.set()
        if not gate.wait(60):  # the daemon never let a cycle through: the test fails below
            raise TimeoutError("no cycle ran while training was held")
        return real_fit(assets, returns, **kw)

    def recording_forecast(assets, returns, **kw):  # noqa: ANN001, ANN003, ANN202
        f = real_forecast(assets, returns, **kw)
        models.append((engine.clock.now(), f.model))
        return f

    fc.fit, fc.forecast = gated_fit, recording_forecast

    def on_cycle(report: object) -> None:
        if report.key.endswith("/risk"):  # type: ignore[attr-defined]
            return
        if training.is_set() and not gate.is_set():
            during.append(report.key)  # type: ignore[attr-defined]
            if len(during) == 3:
                gate.set()
        if gate.is_set() and fc._thread is not None:
            # the test (not the daemon) waits for a released training, so that on a slow machine each
            # one still ends before the next is due and later cycles see the checkpoint
            fc._thread.join(60)

    Daemon(engine, until=begin + timedelta(hours=13), on_cycle=on_cycle).run()

    # three hourly cycles finished while the first training was held in its thread
    assert len(during) == 3 and all(not k.endswith("/risk") for k in during)
    # retrained at start (no checkpoint), then every 4 simulated hours at half past the cycle minute
    led = Ledger(cfg.bot.ledger)
    started = sorted(e.time for e in led.events("forecast_retrain_started"))
    fallbacks = led.events("forecast_fallback")
    failed = led.events("job_failed")
    led.close()
    assert not failed, [e.message for e in failed]
    t0 = begin.replace(minute=0)
    expected = [begin] + [t0 + timedelta(hours=h, minutes=30) for h in (4, 8, 12)]
    assert [t.replace(tzinfo=None) for t in started] == [t.replace(tzinfo=None) for t in expected]
    assert fits == [300] * 4  # train_hours returns from train_hours + 1 bars, at each of the 4 retrains
    # before the first model landed the cycle fell back to ewma and said so, once, in the ledger
    assert len(fallbacks) == 1 and fallbacks[0].where == "forecaster:lstm"
    assert "no checkpoint" in fallbacks[0].message
    assert models[0][1] == "ewma" and models[-1][1] == "lstm"
    assert (tmp_path / "ledger.state" / "lstm.pt").exists()


def test_no_retrain_at_restart_when_the_checkpoint_is_fresh(tmp_path: Path) -> None:
    cfg = parse_config(lstm_config(tmp_path, retrain_every_hours=24), "test")
    begin = START + timedelta(days=40, minutes=10)
    engine = Engine(cfg, clock=SimulatedClock(begin, 0.0))
    Daemon(engine, until=begin + timedelta(hours=2)).run()
    engine.c.forecaster._thread.join(60)
    led = Ledger(cfg.bot.ledger)
    assert len(led.events("forecast_retrain_started")) == 1
    led.close()
    again = Engine(cfg, clock=SimulatedClock(begin + timedelta(hours=3), 0.0))
    Daemon(again, until=begin + timedelta(hours=5)).run()
    led = Ledger(cfg.bot.ledger)
    assert len(led.events("forecast_retrain_started")) == 1  # 3 h old: not due yet
    assert not led.events("job_failed")
    led.close()


def test_forecasters_without_retraining_get_no_job(tmp_path: Path) -> None:
    cfg = parse_config(paper_dict(tmp_path), "test")  # the risk_parity strategy: ewma
    begin = START + timedelta(days=40, minutes=10)
    d = Daemon(Engine(cfg, clock=SimulatedClock(begin, 0.0)), until=begin + timedelta(hours=1))
    d.run()
    assert d.scheduler is not None and d.scheduler.get_job("retrain") is None
