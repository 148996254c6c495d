"""Decision regret: how far the setting a sweep hands over is from the best candidate, judged by true means.

Collect (real runs, `--collect FILE`): a pool of candidate settings each trains `--runs` times with different
training seeds, in one real harness sweep: the settings are its `start_from` entries, nothing is pruned, and
`budget.confirm: {top: all, seeds: runs - 1}` trains the extra seeds. The pool (`POOL`) is the demo search's own
proposals that ended at val WER <= 0.30 in the unpruned sweeps of benchmarks/RESULTS.md (pruning): the close
contenders, where seed noise decides. A setting's true mean is the mean of all its runs.

Replay (`--runs-file FILE`): for each sampler seed, a search of T trials proposes pool settings (Optuna's TPE
over the pool, the demo's `start_from` setting first, as the demo sweep runs it); each proposal draws one of its
setting's recorded runs, in an order shuffled per seed (a repeated proposal is answered by that run, as the
harness answers repeats). Three choices spend the same search:
- single best run: the setting of the best search run (a sweep without `budget.confirm`);
- confirmed: the harness's own `confirmation.decide` on an in-memory study, after the top K settings drew S more
  runs each (`confirmation.runs_to_queue` says which);
- more search: T + K x S search trials instead, then the single best run.
Regret is the chosen setting's true mean minus the best setting's. Sound for a search over a fixed pool: the
values are real runs of those settings. Not replayed: pruning (every search trial here trains to its end) and
proposals outside the pool.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.cli import Verdict, conclude, header, parse_args, table
from benchmarks.project import Project, smoke_lines

# (lr, batch_duration, freeze, use_loss_mask_for_prompt); the first is the demo's `start_from` entry.
POOL = [
    (2.0e-3, 20, "none", True),
    (2.7e-3, 30, "encoder_bn_se", True),
    (3.0e-3, 20, "none", True),
    (2.6e-3, 20, "encoder_bn_se", True),
    (3.4e-3, 20, "encoder", False),
    (1.0e-3, 30, "none", False),
    (9.7e-4, 30, "encoder_bn_se", True),
    (1.2e-3, 20, "encoder_bn_se", True),
]
KNOBS = ("lr", "batch_duration", "freeze", "use_loss_mask_for_prompt")
FULL = {"settings": len(POOL), "runs": 4, "steps": 0, "val_check_interval": 0, "workers": 2, "sampler_seeds": 200}
SMOKE = {"settings": 2, "runs": 3, "steps": 2, "val_check_interval": 1, "workers": 1, "sampler_seeds": 5}
# (search trials, confirm top, confirm seeds): the demo's budget, then larger ones the pool can replay.
PLANS = [(4, 2, 1), (6, 3, 1), (6, 2, 2), (8, 3, 2)]


@dataclass(frozen=True)
class Pool:
    """Every setting's recorded runs (final objective of each), from one collect."""

    params: list[dict]
    values: list[list[float]]  # values[setting] = one value per run
    source: str  # commit and date of the collect

    @property
    def means(self) -> list[float]:
        return [statistics.fmean(v) for v in self.values]


def collect(args, out: Path) -> Pool:
    """One real sweep: every pool setting as a `start_from` entry, unpruned, with `runs - 1` confirmation seeds."""
    from harness.checkout import git_commit, git_dirty
    from harness.confirmation import is_confirmation
    from harness.trial_record import TrialRecord

    pool = [dict(zip(KNOBS, setting, strict=True)) for setting in POOL[: args.settings]]
    with Project("decision", data=args.data, keep=args.keep, **smoke_lines(args)) as project:
        sizes = {"max_steps": args.steps, "val_check_interval": args.val_check_interval}
        spec = project.spec(
            "pool",
            start_from=pool,
            budget={
                **project.demo["budget"],
                **{k: v for k, v in sizes.items() if v},
                "trials": len(pool),
                "baseline": False,
                "confirm": {"top": len(pool), "seeds": args.runs - 1},
            },
            pruner={"type": "none"},
        )
        supervisor = project.supervisor(spec, "pool.log", workers=args.workers)
        started = time.time()
        supervisor.run()
        print(f"  pool sweep: {len(pool)} settings x {args.runs} runs in {time.time() - started:.0f} s", flush=True)
        values: list[list[float]] = [[] for _ in pool]
        for trial in supervisor.study.get_trials(deepcopy=False):
            if trial.value is None:
                raise RuntimeError(f"trial {trial.number} ended {trial.state.name}: every pool run must complete")
            index = pool.index({k: trial.params[k] for k in KNOBS})
            values[index].append(float(trial.value))
            kind = f"confirms {TrialRecord.of(trial).confirms}" if is_confirmation(trial) else "search"
            print(
                f"  trial {trial.number}: setting {index} ({kind}) seed {TrialRecord.of(trial).seed} {trial.value:.4f}"
            )
    commit = f"{(git_commit() or 'unknown')[:7]}{' with local edits' if git_dirty() else ''}"
    result = Pool(pool, values, f"commit {commit}, {time.strftime('%Y-%m-%d %H:%M')}")
    out.write_text(json.dumps({"source": result.source, "params": pool, "values": values}, indent=1) + "\n")
    return result


def read_pool(path: Path) -> Pool:
    raw = json.loads(path.read_text())
    return Pool(raw["params"], raw["values"], raw["source"])


@dataclass(frozen=True)
class Choice:
    """One choice in one replay: the setting, its regret by true mean, and by the runs that choice never saw."""

    setting: int
    regret: float
    unseen_regret: float | None  # mean of the setting's runs not drawn, minus the best true mean (None: all drawn)


def search(pool: Pool, trials: int, seed: int, draws: list[list[float]]) -> list[tuple[int, float]]:
    """A TPE search over the pool's settings, the first setting first; each proposal's value is the setting's
    next unused run, popped from `draws` (a repeat is answered by its first run, nothing drawn)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, trials))
    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial({"setting": 0})
    space: dict[str, optuna.distributions.BaseDistribution] = {
        "setting": optuna.distributions.CategoricalDistribution(list(range(len(pool.params))))
    }
    seen: dict[int, float] = {}
    for _ in range(trials):
        trial = study.ask(space)
        setting = trial.params["setting"]
        if setting not in seen:
            seen[setting] = draws[setting].pop()
        study.tell(trial, seen[setting])
    return [(t.params["setting"], float(t.value)) for t in study.trials if t.value is not None]


def confirmed(pool: Pool, found: list[tuple[int, float]], draws: list[list[float]], spec) -> tuple[int, int]:
    """The harness's own decision (`confirmation.decide`) over the search's runs plus the confirmation runs it
    asks for (`confirmation.runs_to_queue`), each popped from `draws`: the chosen setting, and the best mean's
    (they differ when the cheaper of settings that cannot be told apart is chosen)."""
    import optuna

    from harness.confirmation import decide, runs_to_queue
    from harness.search_space import load_search_space
    from harness.trial_record import TrialRecord

    distributions = load_search_space(Path(spec.search_space))
    study = optuna.create_study(direction="minimize")
    for setting, value in found:
        study.add_trial(
            optuna.trial.create_trial(params=pool.params[setting], distributions=distributions, value=value)
        )
    for candidate in runs_to_queue(study, spec):
        setting = pool.params.index({k: candidate.params[k] for k in KNOBS})
        run = optuna.trial.create_trial(
            params=pool.params[setting],
            distributions=distributions,
            value=draws[setting].pop(),
            user_attrs=TrialRecord.attrs(confirms=candidate.number),
        )
        study.add_trial(run)
    decision = decide(study, spec)
    assert decision is not None
    chosen, best_mean = (
        pool.params.index({k: s.params[k] for k in KNOBS}) for s in (decision.setting, decision.settings[0])
    )
    return chosen, best_mean


def replay(pool: Pool, plan: tuple[int, int, int], seed: int, spec) -> dict[str, Choice]:
    """The three choices for one sampler seed, on the same shuffled runs: paired, since the first T trials of
    the longer search are the shorter search's (same seed, same start-up draws)."""
    trials, top, seeds = plan
    rng = random.Random(seed)
    order = [rng.sample(values, len(values)) for values in pool.values]
    best = min(pool.means)

    def choice(setting: int, left: list[list[float]]) -> Choice:
        unseen = statistics.fmean(left[setting]) - best if left[setting] else None
        return Choice(setting, pool.means[setting] - best, unseen)

    draws = [list(o) for o in order]
    found = search(pool, trials, seed, draws)
    single = choice(min(found, key=lambda run: run[1])[0], [list(d) for d in draws])
    confirm, best_mean = confirmed(pool, found, draws, spec)
    wider_draws = [list(o) for o in order]
    wider = search(pool, trials + top * seeds, seed, wider_draws)
    return {
        "single best run": single,
        "confirmed": choice(confirm, draws),
        "confirmed, best mean (no cheaper-setting rule)": choice(best_mean, draws),
        "more search": choice(min(wider, key=lambda run: run[1])[0], wider_draws),
    }


def spread(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):.4f} (sd {statistics.stdev(values):.4f})" if len(values) > 1 else "-"


def report(pool: Pool, results: dict[tuple, list[dict[str, Choice]]]) -> list[Verdict]:
    print(f"pool: {len(pool.params)} settings, runs per setting {[len(v) for v in pool.values]} ({pool.source})")
    rows: list[tuple] = []
    for i, (params, values) in enumerate(zip(pool.params, pool.values, strict=True)):
        text = " ".join(f"{k}={v}" for k, v in params.items())
        rows.append(
            (i, text, " ".join(f"{v:.4f}" for v in values), spread(values), f"{pool.means[i] - min(pool.means):.4f}")
        )
    table(rows, ["setting", "params", "runs", "mean (sd)", "gap to best mean"])
    verdicts = []
    for plan, replays in results.items():
        trials, top, seeds = plan
        print(
            f"plan: {trials} search trials, confirm top {top} x {seeds} seeds "
            f"(more search: {trials + top * seeds} trials); "
            f"{len(replays)} sampler seeds"
        )
        rows = []
        for name in replays[0]:
            regrets = [r[name].regret for r in replays]
            unseen = [u for r in replays if (u := r[name].unseen_regret) is not None]
            picked_best = sum(r == 0 for r in regrets) / len(regrets)
            rows.append(
                (
                    name,
                    spread(regrets),
                    f"{statistics.median(regrets):.4f}",
                    f"{100 * picked_best:.0f}%",
                    spread(unseen),
                    len(unseen),
                )
            )
        table(
            rows, ["choice", "mean regret (sd)", "median", "picked the best", "regret on unseen runs (sd)", "n unseen"]
        )
        if plan == PLANS[0]:
            mean = {name: statistics.fmean(r[name].regret for r in replays) for name in replays[0]}
            others = min(mean["single best run"], mean["more search"])
            verdicts.append(
                Verdict(
                    "decision: demo plan, confirmed mean regret minus the better alternative's",
                    mean["confirmed"] - others,
                    "< 0",
                    mean["confirmed"] < others,
                )
            )
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        __doc__.splitlines()[0],
        argv,
        full=FULL,
        smoke=SMOKE,
        paths={"collect": "run the pool's sweep and write its runs here", "runs_file": "replay the runs of this file"},
    )
    header("decision: regret of the single best run, the confirmed winner and more search, over real runs", args)
    if not (args.collect or args.runs_file):
        raise SystemExit("give --collect FILE (train the pool, then replay) or --runs-file FILE (replay a pool)")
    pool = collect(args, args.collect) if args.collect else read_pool(args.runs_file)
    with Project("decision-replay", data=args.data, keep=False, **smoke_lines(args)) as project:
        runs = min(len(v) for v in pool.values)
        plans = [p for p in PLANS if 1 + p[2] < runs] or [(2, 2, 1)]
        results = {}
        for plan in plans:
            trials, top, seeds = plan
            spec = project.spec(f"plan-{trials}-{top}-{seeds}", budget={"confirm": {"top": top, "seeds": seeds}})
            results[plan] = [replay(pool, plan, seed, spec) for seed in range(args.sampler_seeds)]
    return conclude(*report(pool, results))


if __name__ == "__main__":
    raise SystemExit(main())
