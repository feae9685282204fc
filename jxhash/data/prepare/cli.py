"""`prepare <dataset> --raw DIR --out DIR [--protocol P] [--rule key=value ...] [--overwrite]`.

Reads the official downloads in --raw (the archives as downloaded, or extracted, or both) and
writes one protocol folder to --out (its files: `jxhash.data.prepare.pipeline`). A bad input is
one line on stderr and exit code 2. A killed run continues where it stopped when run again with
the same arguments; a finished --out is kept unless --overwrite is given.
"""

from __future__ import annotations

import sys

from jxhash.cli import ArgumentParser, main as run_main


def parser() -> ArgumentParser:
  from jxhash.data.prepare import datasets
  names = datasets()
  lines = []
  for name, d in names.items():
    lines.append(f"  {name}: protocols {', '.join(sorted(d.protocols))} (default {d.default_protocol}); "
                 f"rules {', '.join(d.rules.names)}")
  p = ArgumentParser(prog="jxhash prepare", description=__doc__.split("\n")[0],
                     epilog="datasets:\n" + "\n".join(lines) + "\n\nRules and their sources: docs/data.md.")
  p.add_argument("dataset", choices=sorted(names), help="the dataset")
  p.add_argument("--raw", required=True, help="folder holding the official downloads (zipped or extracted)")
  p.add_argument("--out", required=True, help="the protocol folder to write")
  p.add_argument("--protocol", default=None, help="the protocol (default: the dataset's; see below)")
  p.add_argument("--rule", action="append", default=[], metavar="KEY=VALUE",
                 help="override one rule of the protocol (repeatable), e.g. num_query=5000")
  p.add_argument("--overwrite", action="store_true", help="replace a finished --out")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _run(args) -> None:
  from jxhash.data.prepare import datasets, prepare
  dataset = datasets()[args.dataset]
  given = dataset.rules.parse(args.rule)
  manifest = prepare(dataset, args.raw, args.out, protocol=args.protocol, rules=given, overwrite=args.overwrite,
                     show_progress=not args.no_progress)
  sizes = manifest["counts"]["splits"]
  print(f"{args.dataset} ({manifest['protocol']}): {manifest['counts']['items']} items, "
        f"{manifest['counts']['labels']} labels, {manifest['counts']['vocabulary']}-d text; query "
        f"{sizes['query']}, retrieval {sizes['retrieval']}, train {sizes['train']}, val {sizes['val']} -> {args.out}")


def main(argv=None) -> int:
  return run_main(_run, sys.argv[1:] if argv is None else argv, parser())


if __name__ == "__main__":
  sys.exit(main())
