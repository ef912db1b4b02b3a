#!/usr/bin/env python3
"""Export the weight-averaged model of a run as safetensors (no pickle) and/or in RobustBench's key layout.

    python scripts/export.py logs/score-lse score-lse-rb.safetensors --layout robustbench  # or OUT.pt, OUT.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from core.run.export import LAYOUTS, export_weights  # noqa: E402
from core.utils.errors import ArgumentParser, exit_on_user_error  # noqa: E402


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', metavar='RUN_DIR_OR_CHECKPOINT', help='run folder (LOG_DIR/DESC) or weights file')
    parser.add_argument('out', metavar='OUT', help='output file: .safetensors, .pt or .pth')
    parser.add_argument('--layout', choices=LAYOUTS, default='reference',
                        help="reference: module.0.* keys (eval-aa.py, --pretrained-file); robustbench: the bare "
                             "keys of RobustBench's DMWideResNet")
    parser.add_argument('--unaveraged', action='store_true', default=False,
                        help='export the trained (unaveraged) model instead of the weight-averaged one')
    parser.add_argument('--overwrite', action='store_true', default=False, help='replace an existing OUT')
    args = parser.parse_args(argv)
    meta = export_weights(args.src, args.out, layout=args.layout, unaveraged=args.unaveraged,
                          overwrite=args.overwrite)
    print(f'{args.out}: {meta["source_state_dict"]} of {meta["source"]}, {args.layout} layout')
    if 'robustbench' in meta:
        print(f'RobustBench: {meta["robustbench"]}')
    return meta


if __name__ == '__main__':
    exit_on_user_error(main)
