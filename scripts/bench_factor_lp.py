"""LP relaxation strength and solve time: factor terms vs the equivalent group-term encoding.

Each instance is a DAG of ``blocks`` fan-outs: a producer with ``k`` consumers (layouts 0..T-1);
the consumers join into the next block's producer (random edge costs), so nothing is
eliminated. The fanned-out tensor is converted once per distinct layout ``d`` that any
consumer needs, other than the producer's layout ``s``, at cost ``conv[s, d]``:

- groups:  for each (s, d != s), GroupTerm(conv[s, d], members ((c, d) for c in consumers),
           anchor (producer, s));
- factor:  FactorTerm((producer, *consumers), table[s, d_1..d_k] = sum over the distinct
           d_i != s of conv[s, d_i]).

Both have the same objective on every assignment (checked). Reported per (blocks, k): the mean
LP bound / optimum, the share of instances whose LP relaxation is integral (the LP-first
shortcut), model size and solve time (HiGHS, and CBC on the smaller ones).

    python scripts/bench_factor_lp.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pulp

from hypar.ilp import solve as solver
from hypar.ilp.model import build_model
from hypar.ilp.problem import FactorTerm, GroupTerm, LevelProblem
from hypar.ilp.reduce import reduce_problem

T = 3


def instance(blocks: int, k: int, seed: int, coupled: bool = False
             ) -> tuple[LevelProblem, LevelProblem]:
    rng = np.random.default_rng(seed)
    n = blocks * (k + 1) + 1
    sizes = [T] * n
    node_cost = [rng.integers(0, 10, T).astype(float) for _ in range(n)]
    edges, edge_cost, groups, factors = [], [], [], []
    for b in range(blocks):
        p = b * (k + 1)
        cons = list(range(p + 1, p + 1 + k))
        nxt = p + k + 1
        conv = rng.integers(2, 12, (T, T)).astype(float)
        np.fill_diagonal(conv, 0.0)
        for s in range(T):
            for d in range(T):
                if d != s:
                    groups.append(GroupTerm(float(conv[s, d]), tuple((c, d) for c in cons),
                                            (p, s)))
        grid = np.indices((T,) * (k + 1))
        table = np.zeros((T,) * (k + 1))
        for d in range(T):
            needs = np.any(grid[1:] == d, axis=0) & (grid[0] != d)
            table += np.where(needs, conv[grid[0], d], 0.0)
        factors.append(FactorTerm((p, *cons), table))
        if coupled:            # also pair costs producer-consumer and between two consumers
            for u, v in [(p, c) for c in cons] + [(cons[0], cons[1])]:
                edges.append((u, v))
                edge_cost.append(rng.integers(0, 8, (T, T)).astype(float))
        for c in cons:                                   # consumers join into the next block
            edges.append((c, nxt))
            edge_cost.append(rng.integers(0, 8, (T, T)).astype(float))
    names = [f"n{i}" for i in range(n)]
    choices = [tuple(str(t) for t in range(T))] * n
    g = LevelProblem(names, choices, node_cost, edges, edge_cost, groups=groups)
    f = LevelProblem(names, choices, node_cost, edges, edge_cost, factors=factors)
    return g, f


def lp_bound(problem: LevelProblem) -> tuple[float, bool]:
    """The LP relaxation's value (in problem units) and whether its x are integral."""
    red = reduce_problem(problem)
    built = build_model(red)
    for v in built.lp.variables():
        v.cat = pulp.LpContinuous
    built.lp.solve(pulp.HiGHS(msg=False))
    value = red.const + built.scale * pulp.value(built.lp.objective)
    xs = np.array([v.varValue for xs in built.x.values() for v in xs])
    return value, bool(np.all(np.abs(xs - np.round(xs)) <= 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--blocks", type=int, nargs="*", default=[10, 40, 120])
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args()
    print("| coupled | blocks | k | encoding | vars | cons | LP/opt (mean, min) | LP integral | "
          "HiGHS s (median, max) | CBC s (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for coupled, blocks, k in [(c, b, k) for c in (False, True) for b in args.blocks
                               for k in (2, 3)]:
        if True:
            rows = {"groups": [], "factor": []}
            for seed in range(args.seeds):
                g, f = instance(blocks, k, seed, coupled)
                rng = np.random.default_rng(seed + 1000)
                for _ in range(20):                          # same objective everywhere
                    a = tuple(int(c) for c in rng.integers(0, T, len(g.names)))
                    assert abs(g.objective(a) - f.objective(a)) <= 1e-9 * max(1, g.objective(a))
                opt = None
                for name, p in (("groups", g), ("factor", f)):
                    t0 = time.perf_counter()
                    sol = solver.solve_ilp(p, time_limit_seconds=args.time_limit)
                    highs_s = time.perf_counter() - t0
                    cbc_s = None
                    if blocks <= 40:
                        t0 = time.perf_counter()
                        cbc = solver.solve_ilp(p, backend="cbc",
                                               time_limit_seconds=args.time_limit)
                        cbc_s = time.perf_counter() - t0
                        assert abs(cbc.objective - sol.objective) <= 1e-6 * sol.objective
                    if opt is None:
                        opt = sol.objective
                    assert abs(sol.objective - opt) <= 1e-6 * opt, (name, sol.objective, opt)
                    bound, integral = lp_bound(p)
                    rows[name].append((sol.n_variables, sol.n_constraints, bound / opt,
                                       integral, highs_s, cbc_s))
            for name, rs in rows.items():
                ratios = [r[2] for r in rs]
                highs = [r[4] for r in rs]
                cbcs = [r[5] for r in rs if r[5] is not None]
                print(f"| {coupled} | {blocks} | {k} | {name} | {rs[0][0]} | {rs[0][1]} | "
                      f"{statistics.mean(ratios):.4f}, {min(ratios):.4f} | "
                      f"{sum(r[3] for r in rs)}/{len(rs)} | "
                      f"{statistics.median(highs):.3f}, {max(highs):.3f} | "
                      f"{statistics.median(cbcs):.3f} |" if cbcs else
                      f"| {coupled} | {blocks} | {k} | {name} | {rs[0][0]} | {rs[0][1]} | "
                      f"{statistics.mean(ratios):.4f}, {min(ratios):.4f} | "
                      f"{sum(r[3] for r in rs)}/{len(rs)} | "
                      f"{statistics.median(highs):.3f}, {max(highs):.3f} | - |", flush=True)


if __name__ == "__main__":
    main()
