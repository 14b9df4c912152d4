"""``rwabot optimize``: CSV parsing, solver choice and output, through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.optimize_cli import InputError, optimize_files, read_vector
from plugins.optimizers.cost_aware import solve_cost_aware
from plugins.optimizers.erc import solve_risk_budget

ASSETS = ["SPY", "TLT", "GLD", "VNQ"]


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    f = np.abs(rng.normal(size=(4, 2)))
    c = f @ f.T + np.diag([0.5, 1.0, 0.8, 1.2])
    vol = np.array([0.15, 0.08, 0.12, 0.2])
    s = np.sqrt(np.diag(c))
    cov = c / np.outer(s, s) * np.outer(vol, vol)
    out = {"cov": tmp_path / "cov.csv"}
    order = [2, 0, 3, 1]  # rows in another order than the header: must be realigned
    pd.DataFrame(cov, index=ASSETS, columns=ASSETS).iloc[order].to_csv(out["cov"])
    out["caps"] = tmp_path / "caps.csv"
    pd.DataFrame([[0.4, 0.3, 0.4, 0.4]], columns=ASSETS).to_csv(out["caps"], index=False)  # header form
    out["current"] = tmp_path / "w0.csv"
    pd.Series([0.25, 0.25, 0.25, 0.25], index=ASSETS, name="w").to_csv(out["current"], index_label="asset")
    out["costs"] = tmp_path / "c.csv"
    pd.Series([0.002, 0.001, 0.003, 0.004], index=ASSETS, name="c").to_csv(out["costs"], index_label="asset")
    out["mu"] = tmp_path / "mu.csv"
    pd.Series([0.06, 0.03, 0.04, 0.07], index=ASSETS, name="mu").to_csv(out["mu"], index_label="asset")
    out["_cov"] = cov  # type: ignore[assignment]
    return out


def test_plain_run_is_erc_with_caps(files: dict) -> None:
    rep = optimize_files(files["cov"], caps=files["caps"])
    ref = solve_risk_budget(files["_cov"], None, [0.4, 0.3, 0.4, 0.4])
    assert rep.solver == "erc" and rep.assets == ASSETS
    np.testing.assert_array_equal(rep.weights, ref.weights)
    assert sum(rep.risk_contributions) == pytest.approx(1.0)
    assert rep.dev <= 1e-8


def test_costs_and_mu_run_rp_cost(files: dict) -> None:
    rep = optimize_files(files["cov"], caps=files["caps"], current=files["current"], costs=files["costs"],
                         mu=files["mu"], lam=0.5)
    ref = solve_cost_aware(files["_cov"], None, [0.4, 0.3, 0.4, 0.4], w0=[0.25] * 4,
                           costs=[0.002, 0.001, 0.003, 0.004], mu=[0.06, 0.03, 0.04, 0.07], lam=0.5)
    assert rep.solver == "rp_cost"
    np.testing.assert_array_equal(rep.weights, ref.weights)
    assert rep.turnover == pytest.approx(ref.turnover) and rep.cost == pytest.approx(ref.cost)
    assert rep.expected_return == pytest.approx(float(np.dot([0.06, 0.03, 0.04, 0.07], ref.weights)))


def test_cli_prints_table_and_json(files: dict) -> None:
    runner = CliRunner()
    args = ["optimize", "--cov", str(files["cov"]), "--caps", str(files["caps"]), "--current", str(files["current"]),
            "--costs", str(files["costs"]), "--mu", str(files["mu"]), "--lambda", "0.5"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for word in ("rp_cost", "SPY", "sigma_p", "turnover", "cost", "iterations", "dev"):
        assert word in res.output
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["solver"] == "rp_cost" and sum(data["weights"]) == pytest.approx(1.0)
    assert set(data) >= {"weights", "risk_contributions", "sigma_p", "turnover", "cost", "iterations", "dev"}


def test_cli_errors_are_clear(files: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.csv"
    pd.Series([0.5, 0.5], index=["SPY", "XXX"]).to_csv(bad, index_label="asset")
    res = runner.invoke(app, ["optimize", "--cov", str(files["cov"]), "--caps", str(bad)])
    assert res.exit_code == 2
    assert "missing ['TLT', 'GLD', 'VNQ'], unknown ['XXX']" in res.output.replace("\n", "")
    tight = tmp_path / "tight.csv"
    pd.Series([0.2] * 4, index=ASSETS).to_csv(tight, index_label="asset")
    res = runner.invoke(app, ["optimize", "--cov", str(files["cov"]), "--caps", str(tight)])
    assert res.exit_code == 2 and "upper bounds sum to 0.8" in res.output.replace("\n", " ")


def test_non_psd_fails_unless_repaired(files: dict, tmp_path: Path) -> None:
    cov = files["_cov"].copy()
    cov[0, 1] = cov[1, 0] = 1.5 * np.sqrt(cov[0, 0] * cov[1, 1])
    p = tmp_path / "np.csv"
    pd.DataFrame(cov, index=ASSETS, columns=ASSETS).to_csv(p)
    with pytest.raises(Exception, match="positive semi-definite"):
        optimize_files(p)
    rep = optimize_files(p, repair_psd=True)
    assert rep.repaired_psd and sum(rep.weights) == pytest.approx(1.0)


def test_vector_without_header_line(tmp_path: Path) -> None:
    p = tmp_path / "v.csv"
    p.write_text("SPY,0.1\nTLT,0.2\nGLD,0.3\nVNQ,0.4\n")
    np.testing.assert_array_equal(read_vector(p, ASSETS, "caps"), [0.1, 0.2, 0.3, 0.4])
    p.write_text("SPY,TLT\n0.1,0.2\n")
    with pytest.raises(InputError, match="missing"):
        read_vector(p, ASSETS, "caps")


def test_a_singular_covariance_is_solved_with_a_warning_naming_the_collinear_pair(tmp_path: Path) -> None:
    """Two identical columns (a duplicated asset) make Σ singular: the weights between the pair are not
    identified, and the user is told so with the condition number, not silently handed a split."""
    vol = np.array([0.15, 0.08, 0.12, 0.12])
    rho = np.array([[1.0, 0.2, 0.3, 0.3], [0.2, 1.0, 0.1, 0.1], [0.3, 0.1, 1.0, 1.0], [0.3, 0.1, 1.0, 1.0]])
    cov = rho * np.outer(vol, vol)
    path = tmp_path / "cov.csv"
    pd.DataFrame(cov, index=ASSETS, columns=ASSETS).to_csv(path)
    res = CliRunner().invoke(app, ["optimize", "--cov", str(path)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "warning: covariance is" in text and "singular" in text and "GLD/VNQ" in text
    data = json.loads(CliRunner().invoke(app, ["optimize", "--cov", str(path), "--json"]).output)
    assert data["condition_number"] > 1e8 and len(data["warnings"]) == 1
    rho[2, 3] = rho[3, 2] = 0.5
    pd.DataFrame(rho * np.outer(vol, vol), index=ASSETS, columns=ASSETS).to_csv(path)
    data = json.loads(CliRunner().invoke(app, ["optimize", "--cov", str(path), "--json"]).output)
    assert data["warnings"] == [] and data["condition_number"] < 1e3
