"""`python -m analysis <command>`: paper-style tables, figures and the benchmark summary."""

from __future__ import annotations

import argparse

from analysis import (
    paper_coverage,
    paper_reproduction,
    paper_tables,
    report_check,
    report_html,
    stage_figure,
    sweep_table,
    table2,
    table3,
    table13,
    transfer_table,
)
from analysis.benchmarks import summarise_benchmarks
from analysis.bsds_table import write_bsds_table
from analysis.figures import plot_pretrain_losses
from core.cli import register_lazily
from core.errors import run_cli
from core.io import write_json


def _alignment_uniformity(args: argparse.Namespace) -> None:
    import torch  # imported here: the other commands do not need torch

    from analysis.alignment_uniformity import measure_alignment_uniformity

    torch.set_num_threads(args.threads)
    measured = measure_alignment_uniformity(args.backbone, args.image_list, args.arch, args.image_size, args.seed,
                                            args.max_images, views=args.views, align_alpha=args.align_alpha,
                                            uniform_t=args.uniform_t)
    write_json(args.out, measured)


# Commands whose modules import torch (~1 GB, seconds to start): imported only when run (or for --help),
# so the many small table and report jobs start in a fraction of a second.
TORCH_COMMANDS = {"coupling": "analysis.coupling", "object-knn": "analysis.object_knn",
                  "correspondence": "analysis.correspondence", "pca-rgb": "analysis.embedding_figure",
                  "proposal-quality": "analysis.proposal_quality"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("benchmarks", help="time and memory of every job, from Snakemake benchmark files")
    p.add_argument("--stage", nargs="+", action="append", required=True, metavar=("NAME", "FILE"),
                   help="a stage's name, then its jobs' benchmark files (repeat per stage)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: summarise_benchmarks({name: files for name, *files in a.stage}, a.out_csv,
                                                       a.out_md))
    p = commands.add_parser("pretrain-losses", help="loss curves of pretraining runs")
    p.add_argument("run_dirs", nargs="+", help="results/pretrain/<run> folders (each with train_log.csv)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=lambda a: plot_pretrain_losses(a.run_dirs, a.out))
    p = commands.add_parser("bsds-table", help="BSDS500 scores of the edge model and its OWT-UCM")
    p.add_argument("--edges", required=True, help="eval_bdry.txt of the edge maps")
    p.add_argument("--ucm", required=True, help="eval_bdry.txt of the UCMs")
    p.add_argument("--timing", required=True, help="timing JSON of bsds-predict")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=lambda a: write_bsds_table(a.edges, a.ucm, a.timing, a.out_csv, a.out_md))
    table2.register(commands)
    table3.register(commands)
    paper_tables.register(commands)
    paper_coverage.register(commands)
    paper_reproduction.register(commands)
    report_html.register(commands)
    report_check.register(commands)
    table13.register(commands)
    stage_figure.register(commands)
    sweep_table.register(commands)
    transfer_table.register(commands)
    p = commands.add_parser("alignment-uniformity", help="held-out L_a and L_u of a backbone's features")
    p.add_argument("--backbone", required=True, help="backbone.pth of `python -m pretrain train`")
    p.add_argument("--image-list", required=True, help="held-out images (`python -m prepare image-list`)")
    p.add_argument("--arch", required=True)
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--max-images", type=int, help="a seeded random sample of this many images (default: all)")
    p.add_argument("--views", default="densecl", help="augmentation of the pairs: index_contrast.views")
    p.add_argument("--align-alpha", type=float, default=2.0)
    p.add_argument("--uniform-t", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=_alignment_uniformity)
    register_lazily(commands, TORCH_COMMANDS, argv)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    run_cli(main)
