"""``anchorlens reproduce``: every experiment of the paper, averaged over seeds, as one offline report.

Each (experiment, task, seed) result is cached as JSON under ``OUT/cache/<settings>/`` (one folder per
combination of model, n, shots, k, batch size, epochs and draws), so a second run with the same settings
skips finished work (delete a file to redo it) and a run with other settings never reuses it. The report quotes the paper's numbers (GPT2-XL / GPT-J, from the
reference notes) next to the measured ones and gives a one-line verdict per claim.

Averaging follows the paper: saliency curves are normalised per seed, then averaged; loyalties and
accuracies are averaged over seeds, then over tasks; the AUCROC curve is averaged over seeds and tasks and
R_l is computed from that average.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from anchorlens.errors import AnchorlensError
from anchorlens.saliency import thirds

EXPERIMENTS = ("saliency", "isolation", "deep", "reweighting", "compression", "diagnosis")

# The paper's numbers (reference notes, sections 2-7), quoted in the report.
PAPER: dict[str, Any] = {
    "saliency": "GPT2-XL: S_wp dominates the shallow layers and decays with depth; S_pq is low early and "
    "becomes the dominant flow in deep layers (Fig. 3, no numeric values given).",
    "isolation": "GPT2-XL and GPT-J: isolating label words in the first 5 layers strongly reduces label and "
    "word loyalty; isolating them in the last 5 layers, or isolating random words, has little effect (Fig. 4).",
    "deep": "AUCROC_l approaches ~0.8 in deep layers for GPT2-XL and GPT-J; R_l stays near 0 in shallow layers "
    "and rises sharply in middle and deep layers (Fig. 5).",
    "reweighting": {
        "Vanilla ICL (1-shot)": {"sst2": 61.28, "trec": 57.56, "agnews": 73.32, "emoc": 15.44, "avg": 51.90},
        "Vanilla ICL (5-shot; AG News 3)": {
            "sst2": 64.75,
            "trec": 60.40,
            "agnews": 52.52,
            "emoc": 9.80,
            "avg": 46.87,
        },
        "Anchor re-weighting (1-shot)": {
            "sst2": 90.07,
            "trec": 60.92,
            "agnews": 81.94,
            "emoc": 41.64,
            "avg": 68.64,
        },
    },
    "compression": {
        "GPT2-XL": {
            "full": (100.0, 100.0, 51.90),
            "text_anchor": (51.05, 36.65, 38.77),
            "hidden_random": (48.96, 5.59, 39.96),
            "hidden_random_top": (57.52, 4.49, 41.72),
            "hidden_anchor": (79.47, 62.17, 45.04),
        },
        "GPT-J": {
            "full": (100.0, 100.0, 56.82),
            "text_anchor": (53.45, 43.85, 40.83),
            "hidden_random": (49.03, 2.16, 31.51),
            "hidden_random_top": (71.10, 11.36, 52.34),
            "hidden_anchor": (89.06, 75.04, 55.59),
        },
    },
    "speedup": {
        "GPT2-XL": {"sst2": 1.1, "trec": 1.5, "agnews": 2.5, "emoc": 1.4},
        "GPT-J": {"sst2": 1.5, "trec": 2.2, "agnews": 2.9, "emoc": 1.9},
    },
    "diagnosis": "GPT2-XL on TREC: both heatmaps single out Description-Entity as the most confused pair, then "
    "Entity-Abbreviation and Description-Abbreviation (Fig. 6).",
}
METHOD_NAMES = {
    "full": "ICL (full prompt)",
    "text_anchor": "Text_anchor",
    "hidden_random": "Hidden_random",
    "hidden_random_top": "Hidden_random-top",
    "hidden_anchor": "Hidden_anchor",
}


@dataclass
class ReproduceConfig:
    """What ``anchorlens reproduce`` runs. ``n`` test queries per task and seed for every experiment
    (diagnosis uses ``max(n, n_components + 1)``)."""

    model: str = "smollm2-135m"
    tasks: tuple[str, ...] = ("sst2", "trec", "agnews", "emoc")
    n: int = 20
    seeds: tuple[int, ...] = (42,)
    out: str = "runs/report"
    experiments: tuple[str, ...] = EXPERIMENTS
    shots: int = 1
    k: int = 5
    batch_size: int = 8
    reweight_epochs: int = 10
    random_top: int = 20
    data_dir: str | None = None
    device: str | None = None
    cache_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def settings_key(cfg: ReproduceConfig) -> str:
    """A short name for the settings that change an experiment's result (not tasks, seeds or paths)."""
    import hashlib

    keys = ("model", "n", "shots", "k", "batch_size", "reweight_epochs", "random_top")
    text = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _cached(path: Path, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    t0 = time.perf_counter()
    result = run()
    result["seconds"] = round(time.perf_counter() - t0, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result) + "\n", encoding="utf-8")
    tmp.rename(path)
    return result


def run_experiment(model: Any, task: Any, experiment: str, seed: int, cfg: ReproduceConfig) -> dict[str, Any]:
    """One experiment on one task and seed, as a JSON-ready dict."""
    from anchorlens.compression import compression
    from anchorlens.deep import deep
    from anchorlens.diagnosis import diagnose
    from anchorlens.isolation import isolation
    from anchorlens.prompts import build_prompts
    from anchorlens.reweighting import table1
    from anchorlens.saliency import saliency

    def prompts(resample: bool = False, n: int | None = None) -> Any:
        return build_prompts(
            model, task, n=n or cfg.n, shots=cfg.shots, seed=seed, resample=resample, on_overflow="drop"
        )

    if experiment == "saliency":
        return saliency(model, prompts(resample=True), batch_size=max(1, cfg.batch_size // 2)).to_json()
    if experiment == "isolation":
        return isolation(model, prompts(), ks=(cfg.k,), seed=seed, batch_size=cfg.batch_size).to_json()
    if experiment == "deep":
        return deep(model, prompts(), batch_size=cfg.batch_size).to_json()
    if experiment == "reweighting":
        res = table1(
            model,
            task,
            n=cfg.n,
            seed=seed,
            epochs=cfg.reweight_epochs,
            eval_batch_size=cfg.batch_size,
            on_overflow="drop",
        )
        return res.to_json()
    if experiment == "compression":
        return compression(
            model, prompts(), batch_size=cfg.batch_size, n_random_top=cfg.random_top, seed=seed
        ).to_json()
    if experiment == "diagnosis":
        ps = prompts(n=max(cfg.n, 11))
        return diagnose(model, ps, batch_size=cfg.batch_size, label_names=task.label_names).to_json()
    raise AnchorlensError(f"Unknown experiment {experiment!r}; choose from {EXPERIMENTS}.")


def reproduce(cfg: ReproduceConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or load from the cache) every experiment and write ``report.html``, ``report.md`` and
    ``results.json`` under ``cfg.out``. Returns the aggregated results."""
    from anchorlens.models import load_model
    from anchorlens.tasks import load_task

    bad = [e for e in cfg.experiments if e not in EXPERIMENTS]
    if bad:
        raise AnchorlensError(f"Unknown experiment(s) {bad}; choose from {EXPERIMENTS}.")
    out = Path(cfg.out)
    tasks = {name: load_task(name, cfg.data_dir) for name in cfg.tasks}
    jobs = [
        (e, t, s)
        for e in cfg.experiments
        for t in cfg.tasks
        for s in cfg.seeds
        if not (e == "diagnosis" and len(tasks[t].label_words) < 3)  # pairwise confusion needs 3+ classes
    ]
    cache = out / "cache" / settings_key(cfg)  # other settings never reuse these results
    loaded: list[Any] = []

    def model() -> Any:  # loaded once, and only if some result is not cached yet
        if not loaded:
            loaded.append(load_model(cfg.model, device=cfg.device, cache_dir=cfg.cache_dir))
        return loaded[0]

    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    t_start = time.perf_counter()
    bar = tqdm(jobs, desc="reproduce", unit="run", disable=not progress)
    for e, t, s in bar:
        bar.set_postfix_str(f"{e} {t} seed {s}")
        path = cache / f"{e}-{tasks[t].name}-{s}.json"

        def job(e: str = e, t: str = t, s: int = s) -> dict[str, Any]:
            return run_experiment(model(), tasks[t], e, s, cfg)

        runs[(e, tasks[t].name, s)] = _cached(path, job)
    named = replace(cfg, tasks=tuple(tasks[t].name for t in cfg.tasks))  # folders -> their task names
    results = aggregate(runs, named)
    results["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    results["config"] = asdict(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    figures = draw_figures(results, out / "figures", named)
    flow = _cached(cache / "flow-view.json", lambda: {"html": _flow_view(model(), tasks[cfg.tasks[0]], cfg)})
    (out / "report.md").write_text(render_markdown(results, named), encoding="utf-8")
    (out / "report.html").write_text(render_html(results, named, figures, flow["html"]), encoding="utf-8")
    return results


# --------------------------------------------------------------------------------------------------
# Aggregation


def _mean(values: Sequence[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _avg(values: Sequence[Any]) -> float:
    """Mean of values that are always defined (accuracies, loyalties)."""
    return float(np.mean(values))


def _std(values: Sequence[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.std(vals)) if len(vals) > 1 else None


def aggregate(runs: dict[tuple[str, str, int], dict[str, Any]], cfg: ReproduceConfig) -> dict[str, Any]:
    """Average every experiment over seeds (then tasks) and attach a verdict per claim."""
    res: dict[str, Any] = {"model": cfg.model, "tasks": list(cfg.tasks), "seeds": list(cfg.seeds), "n": cfg.n}
    by = lambda e: {(t, s): r for (x, t, s), r in runs.items() if x == e}  # noqa: E731

    if sal := by("saliency"):
        per_task = {}
        for t in cfg.tasks:
            seeds = [r for (tt, _), r in sal.items() if tt == t]
            curves = {
                k: np.mean([r[k] for r in seeds], 0).tolist() for k in ("S_wp_norm", "S_pq_norm", "S_ww_norm")
            }
            per_task[t] = {**curves, "thirds": thirds(curves)}
        holds = {
            t: v["thirds"][0]["dominant"] == "S_wp" and v["thirds"][2]["dominant"] == "S_pq"
            for t, v in per_task.items()
        }
        res["saliency"] = {
            "per_task": per_task,
            "holds": holds,
            "verdict": _verdict(holds, "S_wp dominates the shallow third and S_pq the deep third"),
        }

    if iso := by("isolation"):
        rows: dict[tuple[str, str], list[dict[str, float]]] = {}
        per_task_iso: dict[str, list[dict[str, Any]]] = {}
        for (t, _), r in iso.items():
            for run in r["results"]:
                rows.setdefault((run["anchors"], run["layers"]), []).append(run)
                per_task_iso.setdefault(t, []).append(run)
        avg: list[dict[str, Any]] = [
            {
                "anchors": a,
                "layers": layers,
                "k": cfg.k,
                **{m: _avg([x[m] for x in xs]) for m in ("label_loyalty", "word_loyalty", "accuracy")},
            }
            for (a, layers), xs in rows.items()
        ]
        first = next(r for r in avg if (r["anchors"], r["layers"]) == ("label", "first"))
        others = [r for r in avg if r is not first]
        holds_iso = all(
            first["label_loyalty"] < o["label_loyalty"] and first["word_loyalty"] < o["word_loyalty"]
            for o in others
        )
        res["isolation"] = {
            "results": avg,
            "holds": holds_iso,
            "verdict": ("holds" if holds_iso else "does not hold")
            + f": isolating label words in the first {cfg.k} layers gives label loyalty {first['label_loyalty']:.2f} and word "
            f"loyalty {first['word_loyalty']:.2f}, vs at least {min(o['label_loyalty'] for o in others):.2f} and "
            f"{min(o['word_loyalty'] for o in others):.2f} for the other three settings",
        }

    if dp := by("deep"):
        curves_t: dict[str, dict[str, list[float | None]]] = {}
        for t in cfg.tasks:
            seeds = [r for (tt, _), r in dp.items() if tt == t]
            for key in ("aucroc", "aucroc_gold"):
                per_layer = list(zip(*[r[key] for r in seeds], strict=True))
                curves_t.setdefault(t, {})[key] = [_mean(list(v)) for v in per_layer]
        from anchorlens.deep import RISE, cumulative_r

        out: dict[str, Any] = {"per_task": curves_t}
        for key in ("aucroc", "aucroc_gold"):
            defined: list[Any] = [c[key] for c in curves_t.values() if None not in c[key]]
            if defined:
                avg_curve = np.mean(defined, 0).tolist()
                third = max(1, len(avg_curve) // 3)
                out[key] = avg_curve
                out[f"R{key[6:]}"] = cumulative_r(avg_curve)
                out[f"rise{key[6:]}"] = float(np.mean(avg_curve[-third:]) - np.mean(avg_curve[:third]))
                out[f"tasks{key[6:]}"] = [t for t, c in curves_t.items() if None not in c[key]]
        rise = out.get("rise")
        out["holds"] = rise is not None and rise >= RISE
        out["verdict"] = (
            "undefined: the model predicted a single class on every task"
            if rise is None
            else ("holds" if out["holds"] else "does not hold")
            + f": mean AUCROC of the deep third minus the shallow third = "
            f"{rise:+.3f} (threshold {RISE}) over {', '.join(out['tasks'])}; deep-third mean AUCROC "
            f"{np.mean(out['aucroc'][-max(1, len(out['aucroc']) // 3) :]):.2f} (paper: ~0.8)"
        )
        res["deep"] = out

    if rw := by("reweighting"):
        table: dict[str, dict[str, Any]] = {}
        for t in cfg.tasks:
            seeds = [r for (tt, _), r in rw.items() if tt == t]
            table[t] = {
                k: {"mean": _avg([r[k] for r in seeds]), "std": _std([r[k] for r in seeds])}
                for k in ("vanilla_1shot", "vanilla_5shot", "reweighting")
            }
            table[t]["train_seconds"] = _avg([r["train_seconds"] for r in seeds])
        avg_rw = {
            k: _avg([table[t][k]["mean"] for t in table])
            for k in ("vanilla_1shot", "vanilla_5shot", "reweighting")
        }
        beats1 = avg_rw["reweighting"] > avg_rw["vanilla_1shot"]
        beats5 = avg_rw["reweighting"] > avg_rw["vanilla_5shot"]
        res["reweighting"] = {
            "per_task": table,
            "average": avg_rw,
            "holds": beats1 and beats5,
            "verdict": ("holds" if beats1 and beats5 else "does not hold")
            + f": re-weighted 1-shot {100 * avg_rw['reweighting']:.1f} vs "
            f"vanilla 1-shot {100 * avg_rw['vanilla_1shot']:.1f} and 5-shot {100 * avg_rw['vanilla_5shot']:.1f} (average over tasks)",
        }

    if cp := by("compression"):
        methods: dict[str, dict[str, dict[str, float]]] = {}
        speed: dict[str, dict[str, Any]] = {}
        for t in cfg.tasks:
            seeds = [r for (tt, _), r in cp.items() if tt == t]
            methods[t] = {
                m: {
                    k: _avg([r["methods"][m][k] for r in seeds])
                    for k in ("label_loyalty", "word_loyalty", "accuracy")
                }
                for m in METHOD_NAMES
            }
            speed[t] = {
                k: _mean([r[k] for r in seeds])
                for k in (
                    "speedup",
                    "speedup_batched",
                    "ideal_speedup",
                    "demo_tokens",
                    "query_tokens",
                    "kept_tokens",
                )
            }
        avg_cp = {
            m: {
                k: _avg([methods[t][m][k] for t in methods])
                for k in ("label_loyalty", "word_loyalty", "accuracy")
            }
            for m in METHOD_NAMES
        }
        anchor = avg_cp["hidden_anchor"]["label_loyalty"]
        beats = all(
            anchor > avg_cp[m]["label_loyalty"] for m in ("text_anchor", "hidden_random", "hidden_random_top")
        )
        res["compression"] = {
            "per_task": methods,
            "average": avg_cp,
            "speed": speed,
            "holds": beats,
            "verdict": ("holds" if beats else "does not hold")
            + f": Hidden_anchor label loyalty {100 * anchor:.1f} vs "
            + ", ".join(
                f"{METHOD_NAMES[m]} {100 * avg_cp[m]['label_loyalty']:.1f}"
                for m in ("text_anchor", "hidden_random", "hidden_random_top")
            ),
        }

    if dg := by("diagnosis"):
        per = {f"{t}/{s}": r for (t, s), r in dg.items()}
        rhos = [r["spearman"] for r in per.values()]
        rho = _mean(rhos)
        res["diagnosis"] = {
            "runs": per,
            "spearman_mean": rho,
            "holds": rho is not None and rho > 0,
            "verdict": "undefined (too few defined class pairs)"
            if rho is None
            else ("holds" if rho > 0 else "does not hold")
            + f": Spearman agreement of predicted and actual confusion {rho:+.2f}",
        }
    return res


def _verdict(holds: dict[str, bool], claim: str) -> str:
    yes = [t for t, h in holds.items() if h]
    no = [t for t, h in holds.items() if not h]
    status = "holds" if not no else ("does not hold" if not yes else "holds partly")
    return (
        f"{status}: {claim} on "
        + (", ".join(yes) or "no task")
        + (f" (not on {', '.join(no)})" if no else "")
    )


# --------------------------------------------------------------------------------------------------
# Figures and pages


def draw_figures(results: dict[str, Any], folder: Path, cfg: ReproduceConfig) -> dict[str, str]:
    """The paper's figures as PNG files in ``folder``; returns {name: file name}."""
    from anchorlens.render import plot_confusion, plot_deep, plot_isolation, plot_saliency

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    if "saliency" in results:
        for t, curves in results["saliency"]["per_task"].items():
            plot_saliency(curves, title=f"Figure 3: {t}, {cfg.model}", path=folder / f"fig3_{t}.png")
            made[f"fig3_{t}"] = f"fig3_{t}.png"
    if "isolation" in results:
        plot_isolation(
            results["isolation"],
            k=cfg.k,
            title=f"Figure 4: average over {', '.join(cfg.tasks)}",
            path=folder / "fig4.png",
        )
        made["fig4"] = "fig4.png"
    if "deep" in results and ("aucroc" in results["deep"] or "aucroc_gold" in results["deep"]):
        d = results["deep"]
        plot_deep(
            {"aucroc": d.get("aucroc"), "R": d.get("R"), "aucroc_gold": d.get("aucroc_gold")},
            title="Figure 5: average over tasks",
            path=folder / "fig5.png",
        )
        made["fig5"] = "fig5.png"
    if "diagnosis" in results:
        key, run = next(iter(results["diagnosis"]["runs"].items()))
        plot_confusion(run, path=folder / "fig6.png", title=f"Figure 6: {key}, layer {run['layer']}")
        made["fig6"] = "fig6.png"
    return made


def _png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    if fmt == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _sections(results: dict[str, Any], cfg: ReproduceConfig, fmt: str) -> list[tuple[str, str, str, str]]:
    """(title, paper, verdict, body) per experiment, the body as ``fmt`` ("md" or "html") tables."""
    out = []
    tasks = list(cfg.tasks)
    if "saliency" in results:
        s = results["saliency"]
        rows = [
            [
                t,
                *(
                    f"{th['dominant']} ({th['S_wp_norm']:.2f} / {th['S_pq_norm']:.2f})"
                    if th["layers"]
                    else "no layers"
                    for th in v["thirds"]
                ),
            ]
            for t, v in s["per_task"].items()
        ]
        out.append(
            (
                "Figure 3: information flow (section 2.1)",
                PAPER["saliency"],
                s["verdict"],
                _table(
                    ["task", "shallow third: dominant (S_wp / S_pq)", "middle third", "deep third"], rows, fmt
                ),
            )
        )
    if "isolation" in results:
        s = results["isolation"]
        rows = [
            [
                f"{r['anchors']} words, {r['layers']} {r['k']} layers",
                _pct(r["label_loyalty"]),
                _pct(r["word_loyalty"]),
                _pct(r["accuracy"]),
            ]
            for r in s["results"]
        ]
        out.append(
            (
                "Figure 4: isolating label words (section 2.2)",
                PAPER["isolation"],
                s["verdict"],
                _table(
                    ["setting (average over tasks)", "label loyalty", "word loyalty", "accuracy"], rows, fmt
                ),
            )
        )
    if "deep" in results:
        s = results["deep"]
        rows = [
            [
                t,
                " ".join("-" if a is None else f"{a:.2f}" for a in c["aucroc"]),
                " ".join("-" if a is None else f"{a:.2f}" for a in c["aucroc_gold"]),
            ]
            for t, c in s["per_task"].items()
        ]
        out.append(
            (
                "Figure 5: deep layers, AUCROC_l and R_l (section 2.3)",
                PAPER["deep"],
                s["verdict"],
                _table(["task", "AUCROC per layer vs prediction (the paper's)", "vs gold"], rows, fmt),
            )
        )
    if "reweighting" in results:
        s = results["reweighting"]
        paper = PAPER["reweighting"]
        rows = []
        for (label, key), plabel in zip(
            (
                ("Vanilla ICL (1-shot)", "vanilla_1shot"),
                ("Vanilla ICL (5-shot; AG News 3)", "vanilla_5shot"),
                ("Anchor re-weighting (1-shot)", "reweighting"),
            ),
            paper,
            strict=True,
        ):
            cells = []
            for t in tasks:
                m = s["per_task"][t][key]
                cells.append(
                    _pct(m["mean"])
                    + ("" if m["std"] is None else f" ± {100 * m['std']:.1f}")
                    + f" (paper {paper[plabel].get(t, '-')})"
                )
            rows.append([label, *cells, f"{_pct(s['average'][key])} (paper {paper[plabel]['avg']})"])
        out.append(
            (
                "Table 1: anchor re-weighting (section 3.1)",
                "GPT2-XL accuracy, mean of 5 seeds (paper values in brackets).",
                s["verdict"],
                _table(["method", *tasks, "average"], rows, fmt),
            )
        )
    if "compression" in results:
        s = results["compression"]
        rows = []
        for m, name in METHOD_NAMES.items():
            a = s["average"][m]
            gx, gj = PAPER["compression"]["GPT2-XL"][m], PAPER["compression"]["GPT-J"][m]
            rows.append(
                [
                    name,
                    _pct(a["label_loyalty"]),
                    _pct(a["word_loyalty"]),
                    _pct(a["accuracy"]),
                    f"{gx[0]} / {gx[1]} / {gx[2]}",
                    f"{gj[0]} / {gj[1]} / {gj[2]}",
                ]
            )
        body = _table(
            [
                "method",
                "label loyalty",
                "word loyalty",
                "accuracy",
                "paper GPT2-XL (LL / WL / acc)",
                "paper GPT-J",
            ],
            rows,
            fmt,
        )
        speed_rows = [
            [
                t,
                f"{v['speedup']:.2f}x" if v["speedup"] else "n/a",
                f"{v['speedup_batched']:.2f}x" if v["speedup_batched"] else "n/a",
                f"{v['ideal_speedup']:.2f}x",
                f"{v['demo_tokens']:.0f}",
                f"{v['query_tokens']:.0f}",
                f"{PAPER['speedup']['GPT2-XL'].get(t, '-')}x / {PAPER['speedup']['GPT-J'].get(t, '-')}x",
            ]
            for t, v in s["speed"].items()
        ]
        body += ("\n" if fmt == "md" else "") + _table(
            [
                "task",
                "speed-up, batch 1",
                "batched",
                "ideal (tokens)",
                "L_demo",
                "L_x",
                "paper GPT2-XL / GPT-J",
            ],
            speed_rows,
            fmt,
        )
        out.append(
            (
                "Tables 2 and 3: anchor-only compression (section 3.2)",
                "Averages over the four tasks (paper: GPT2-XL and GPT-J).",
                s["verdict"],
                body,
            )
        )
    if "diagnosis" in results:
        s = results["diagnosis"]
        rows = []
        for key, r in s["runs"].items():
            mc = r["most_confused"]
            fmtp = lambda ps: "; ".join(f"{p['pair'][0]}-{p['pair'][1]} {p['value']:.2f}" for p in ps)  # noqa: E731
            rows.append(
                [
                    key,
                    r["layer"],
                    "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}",
                    fmtp(mc["predicted"]),
                    fmtp(mc["actual"]),
                ]
            )
        out.append(
            (
                "Figure 6: anchor distances for error diagnosis (section 3.3)",
                PAPER["diagnosis"],
                s["verdict"],
                _table(
                    ["task/seed", "layer", "Spearman", "most confused (predicted)", "most confused (actual)"],
                    rows,
                    fmt,
                ),
            )
        )
    return out


def render_markdown(results: dict[str, Any], cfg: ReproduceConfig) -> str:
    lines = [
        f"# anchorlens report: {cfg.model}",
        "",
        f"Tasks {', '.join(cfg.tasks)}; n = {cfg.n} per task and seed; seeds {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.shots} demonstration(s) per class; re-weighting {cfg.reweight_epochs} epochs (the paper: 10). "
        f"Wall time {results.get('wall_seconds', 0):.0f} s.",
        "",
    ]
    for title, paper, verdict, body in _sections(results, cfg, "md"):
        lines += [f"## {title}", "", f"**Verdict:** {verdict}.", "", f"Paper: {paper}", "", body]
    return "\n".join(lines) + "\n"


def render_html(
    results: dict[str, Any], cfg: ReproduceConfig, figures: dict[str, str], flow: str = ""
) -> str:
    folder = Path(cfg.out) / "figures"
    figs_for = {
        "Figure 3": [k for k in figures if k.startswith("fig3_")],
        "Figure 4": ["fig4"],
        "Figure 5": ["fig5"],
        "Figure 6": ["fig6"],
    }
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>anchorlens report</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:24px auto;padding:0 12px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}"
        "th{background:#f3f3f3}.verdict{padding:6px 10px;border-radius:4px;background:#eef5ff}.holds{background:#e8f6e8}"
        ".nothold{background:#fdecea}.paper{color:#555;font-style:italic}.figs img{width:48%;margin:1%}",
        "</style></head><body>",
        f"<h1>anchorlens: Label Words are Anchors on {html.escape(cfg.model)}</h1>",
        f"<p>Tasks {html.escape(', '.join(cfg.tasks))}; n = {cfg.n} per task and seed; seeds {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.shots} demonstration(s) per class; re-weighting trained {cfg.reweight_epochs} epochs (the paper: 10); "
        f"wall time {results.get('wall_seconds', 0):.0f} s. Everything on this page is "
        "embedded: it needs no network.</p>",
    ]
    for title, paper, verdict, body in _sections(results, cfg, "html"):
        cls = (
            "holds"
            if verdict.startswith("holds") and not verdict.startswith("holds partly")
            else ("nothold" if verdict.startswith("does not") else "")
        )
        parts += [
            f"<h2>{html.escape(title)}</h2>",
            f"<p class='verdict {cls}'><b>Verdict:</b> {html.escape(verdict)}.</p>",
            f"<p class='paper'>Paper: {html.escape(paper)}</p>",
            body,
        ]
        for prefix, keys in figs_for.items():
            if title.startswith(prefix):
                parts.append(
                    "<div class='figs'>"
                    + "".join(_png_tag(folder / figures[k], k) for k in keys if k in figures)
                    + "</div>"
                )
    if flow:
        parts += ["<h2>One prompt's token-to-token information flow</h2>", flow]
    parts.append("</body></html>")
    return "\n".join(parts)


def _flow_view(model: Any, task: Any, cfg: ReproduceConfig) -> str:
    """The first prompt of ``task``: the SVG flow diagram and the circuitsvis saliency view (inlined)."""
    from anchorlens.prompts import build_prompts
    from anchorlens.render import flow_diagram, saliency_heads_view
    from anchorlens.saliency import saliency

    p = build_prompts(model, task, n=1, shots=cfg.shots, seed=cfg.seeds[0])[0]
    matrices = saliency(model, [p], keep="layers").matrices
    assert matrices is not None
    buf = io.StringIO()
    buf.write(flow_diagram(model, p, matrices[0], title=f"{task.name}: arcs = saliency per layer"))
    buf.write(saliency_heads_view(model, p, matrices[0]).local_src)
    return buf.getvalue()
