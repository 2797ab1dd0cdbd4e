"""The README's "Is the pathway gradient more faithful?" table, from result folders.

Combines the records of ``keras-pathways evaluate`` (ROAD, deletion, insertion,
faithfulness correlation, GridPG: mean ± 95 % CI over images) with the cell
records of ``keras-pathways roar --preset benchmark --mode both`` (ROAR and KAR
AUC: mean ± std over seeds, from the methods and fractions finished so far) into
one Markdown table, methods × metrics, prints ROAR's and KAR's per-t tables and
comparisons (summary.md of each mode), and copies the small result files to
``--copy-to`` (the JSON/CSV/MD summaries and plots; not the pixel orders).

    python benchmarks/faithfulness_report.py --evaluate runs/eval_fm --roar runs/roar_benchmark
"""

import argparse
import os
import shutil
import sys
import tempfile

from keras_pathways.evaluation import evaluator
from keras_pathways.evaluation import retraining

METHODS = ("pathway_gradient", "pathway_intgrad", "gradient", "input_x_gradient", "integrated_gradients",
           "smoothgrad", "guided_backprop", "grad_cam", "random")
COLUMNS = (
    ("roar", "auc", "ROAR AUC ↓"), ("kar", "auc", "KAR AUC ↑"),
    ("road", "morf_auc", "ROAD MoRF ↓"), ("road", "lerf_auc", "ROAD LeRF ↑"), ("road", "gap", "ROAD gap ↑"),
    ("deletion", "auc", "deletion ↓"), ("insertion", "auc", "insertion ↑"),
    ("faithfulness", "correlation", "faithfulness ↑"), ("gridpg", "score", "GridPG ↑"),
)


def evaluate_records(folder):
    """(metric, method) -> record of an evaluate folder (corrupt records reported)."""
    return evaluator.folder_records(folder, print)


def roar_rows(folder):
    """mode -> method -> (auc, std or None, seeds, fractions) for methods with every fraction."""
    rows = {}
    for mode in ("roar", "kar"):
        records = retraining.load_records([folder], mode, log=lambda *_: None)
        if not records:
            continue
        summary = retraining.summarize([folder], os.path.join(folder, "report", mode), mode)
        for method, row in summary["methods"].items():
            rows.setdefault(mode, {})[method] = row
        rows.setdefault(mode, {})["_summary"] = summary
    return rows


def cell(records, roar, metric, value, method):
    if metric in ("roar", "kar"):
        row = roar.get(metric, {}).get(method)
        if row is None:
            return ""
        if row["fractions"] == list(retraining.DEFAULT_FRACTIONS):
            return retraining.auc_text(row)   # as in summary.md
        # Not every fraction yet: the accuracy per finished fraction (a spread only over several seeds).
        return "; ".join(f"t={f:g}: {100 * m:.1f}" + (f" ± {100 * sd:.1f}" if n >= 2 else "") + f" % ({n})"
                         for f, m, sd, n in zip(row["fractions"], row["mean"], row["std"], row["seeds"]))
    record = records.get((metric, method))
    if record is None or value not in record["values"]:
        return ""
    v = record["values"][value]
    return f"{v['mean']:.3f} ± {v['ci95']:.3f}"


def table(records, roar, methods=METHODS):
    columns = [c for c in COLUMNS if (c[0] in roar) or any(k[0] == c[0] for k in records)]
    lines = ["| method | " + " | ".join(c[2] for c in columns) + " |", "|" + " --- |" * (len(columns) + 1)]
    for method in methods:
        cells = [cell(records, roar, metric, value, method) for metric, value, _ in columns]
        if any(cells):
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaluate", default=None, help="a keras-pathways evaluate output folder")
    parser.add_argument("--roar", default=None, help="a keras-pathways roar output folder")
    parser.add_argument("--copy-to", default=None, help="copy the small result files here")
    parser.add_argument("--from-copy", default=None, metavar="DIR",
                        help="read a folder written by --copy-to (e.g. docs/results/faithfulness_fm) "
                             "instead of --evaluate/--roar")
    args = parser.parse_args(argv)
    if args.from_copy:
        if args.evaluate or args.roar or args.copy_to:
            parser.error("--from-copy reads its own folder: give it alone")
        with tempfile.TemporaryDirectory() as view:
            args.evaluate, args.roar = copy_view(args.from_copy, view)
            return report(args)
    return report(args)


def copy_view(folder, view):
    """(evaluate, roar) folders laid out as the commands write them, linking a --copy-to folder's files."""
    evaluate, roar = os.path.join(view, "evaluate"), os.path.join(view, "roar")
    os.makedirs(evaluate)
    os.makedirs(roar)
    found = []
    for prefix, target in (("evaluate_", evaluate), ("roar_", roar)):
        for name in os.listdir(folder):
            if name.startswith(prefix) and name != "roar_report":
                os.symlink(os.path.abspath(os.path.join(folder, name)), os.path.join(target, name[len(prefix):]))
                found.append(name)
    if not found:
        raise SystemExit(f"{folder}: no evaluate_* or roar_* files (a folder written by --copy-to)")
    has = {name.split("_")[0] for name in found}
    return (evaluate if "evaluate" in has else None), (roar if "roar" in has else None)


def report(args):
    records = evaluate_records(args.evaluate) if args.evaluate else {}
    roar = roar_rows(args.roar) if args.roar else {}
    print(table(records, roar))
    for mode in ("roar", "kar"):
        if mode in roar:
            # The per-t table and the comparisons, as retraining.summarize wrote them (the README's tables).
            with open(os.path.join(args.roar, "report", mode, "summary.md"), encoding="utf-8") as f:
                print("\n" + f.read().rstrip("\n"))
    if args.copy_to:
        os.makedirs(args.copy_to, exist_ok=True)
        if args.evaluate:
            for name in ("summary.json", "summary.csv", "summary.md", "curves.png", "config.json"):
                source = os.path.join(args.evaluate, name)
                if os.path.exists(source):
                    shutil.copy(source, os.path.join(args.copy_to, "evaluate_" + name))
            shutil.copytree(os.path.join(args.evaluate, "records"), os.path.join(args.copy_to, "evaluate_records"),
                            dirs_exist_ok=True)
        if args.roar:
            for name in ("config.json", "explained.json"):
                shutil.copy(os.path.join(args.roar, name), os.path.join(args.copy_to, "roar_" + name))
            shutil.copytree(os.path.join(args.roar, "cells"), os.path.join(args.copy_to, "roar_cells"),
                            dirs_exist_ok=True)
            shutil.copytree(os.path.join(args.roar, "report"), os.path.join(args.copy_to, "roar_report"),
                            dirs_exist_ok=True)
        print(f"Copied the result files to {args.copy_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
