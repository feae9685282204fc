"""The `jxhash` command line: one entry point, a subcommand per job.

    jxhash train --method=mmach            # = python experiments/run.py --method=mmach
    jxhash sweep | reproduce | report | index | launch | baselines | extract | prepare ...

Each subcommand is a module here with `main(argv) -> exit code`; `experiments/*.py` are thin
wrappers over the same functions. Every subcommand reports bad input as one line on stderr with
exit code 2 (`jxhash.cli.main`). May import: everything in jxhash (this is the outermost layer);
nothing in jxhash imports it.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("jxhash.commands.train", "train and evaluate one method; results file and checkpoints"),
    "sweep": ("jxhash.commands.sweep", "choose hyper-parameters on a val split, then test the choice once"),
    "reproduce": ("jxhash.commands.reproduce", "run a folder of config files and baselines; print their table"),
    "report": ("jxhash.commands.report", "results files -> markdown table and plots (--update-readme)"),
    "index": ("jxhash.commands.index", "build, search and convert packed-code indexes"),
    "launch": ("jxhash.commands.launch", "start one multi-process run as N local processes"),
    "baselines": ("jxhash.commands.baselines", "closed-form baselines (lsh, cca-sign, ridge-itq)"),
    "extract": ("jxhash.extract", "image/text features from a ported encoder (CLIP, AlexNet, ResNet-34, CNN-F)"),
    "prepare": ("jxhash.data.prepare.cli", "official downloads -> a protocol folder the loaders read"),
}


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
  return ("usage: jxhash <command> [options]   (jxhash <command> --help for its options and examples)\n\n"
          "commands:\n" + "\n".join(lines) + "\n\nexample:\n  jxhash train --method=mmach\n")


def main(argv=None) -> int:
  argv_given = argv
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(usage(), end="")
    return 0 if argv else 2
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)} (see jxhash --help)", file=sys.stderr)
    return 2
  module = importlib.import_module(COMMANDS[name][0])
  code = module.main(rest)
  if code and argv_given is None:
    from jxhash.cli import quiet_after_failure
    quiet_after_failure()
  return code
