"""`edge-agent kt ...`: train a model package from an answer log, or rebuild the default package.

torch is imported only inside the handlers (the ``train`` extra), so the CLI loads without it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
from pathlib import Path

from edge_agent.argument_types import at_least
from edge_agent.errors import EdgeAgentError


def add_kt_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    kt = subparsers.add_parser("kt", help="knowledge-tracing models")
    sub = kt.add_subparsers(dest="kt_command", required=True)
    train = sub.add_parser("train", help="train a model package from an answer log (needs the train extra)")
    train.add_argument("--format", choices=("dkt-csv", "pykt-csv"), default="dkt-csv")
    train.add_argument("--train", type=Path, required=True, help="answer log to train on")
    train.add_argument("--test", type=Path, help="held-out students (default: 20%% of --train)")
    train.add_argument("--out", type=Path, required=True, help="package directory to write")
    train.add_argument("--skills", type=Path, metavar="SKILLS.csv",
                       help="the skills' names: columns skill_id, name_zh and optionally name_en (UTF-8)")
    train.add_argument("--items", type=Path, metavar="ITEMS.csv",
                       help="the exercises recommendations name: columns item_id, skill_id, title_zh and "
                            "optionally title_en, difficulty (UTF-8)")
    _train_options(train, epochs=10, hidden=96)
    train.set_defaults(func=cmd_kt_train)
    default = sub.add_parser("build-default", help="rebuild engines/kt-default from simulated students")
    default.add_argument("--out", type=Path, required=True)
    default.add_argument("--students", type=at_least(20), default=8000,
                         help="simulated students (at least 20: some are held out to measure the AUC)")
    _train_options(default, epochs=15, hidden=64)
    default.set_defaults(func=cmd_kt_build_default)
    roster = sub.add_parser(
        "roster", help="the class roster: the students whose answers this board takes (kt.roster_file)"
    )
    roster.add_argument("action", choices=("set", "add", "remove", "count"),
                        help="set: the list replaces the roster; add/remove: change it; count: how many")
    roster.add_argument("list", nargs="?", type=Path,
                        help="student ids, one per line, or a CSV with --column; '-' reads standard input")
    roster.add_argument("--column", help="in a CSV with a header row: the column holding the student ids")
    roster.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    roster.set_defaults(func=cmd_kt_roster)
    erase = sub.add_parser(
        "erase", help="erase students' learning data on this board (a parent's request), through the daemon"
    )
    erase.add_argument("student_ids", nargs="*", help="the school's student ids")
    erase.add_argument("--file", type=Path,
                       help="student ids, one per line, or a CSV with --column; '-' reads standard input")
    erase.add_argument("--column", help="in a CSV with a header row: the column holding the student ids")
    erase.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    erase.set_defaults(func=cmd_kt_erase)
    return kt


def _train_options(parser: argparse.ArgumentParser, epochs: int, hidden: int) -> None:
    # at least 1 (a review: --hidden 0 ended build-default in a traceback, --epochs 0 trained nothing)
    parser.add_argument("--epochs", type=at_least(1), default=epochs, help="the most epochs trained")
    parser.add_argument("--hidden", type=_hidden_size, default=hidden,
                        help=f"the model's hidden size, 1 to {MOST_HIDDEN} (default {hidden})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=2,
                        help="stop after this many epochs without a better AUC on the validation students "
                             "(10%% of the training students); 0: train every epoch on all of them")


# An LSTM of 1024 is ~4.5 M weights (18 MB) and 8 KB of state per student: ten times the default and still
# what a Jetson board runs live. --hidden 1000000 went on to a RuntimeError traceback (a review).
MOST_HIDDEN = 1024


def _hidden_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MOST_HIDDEN:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1 and at most {MOST_HIDDEN}")
    return value


def _failed(exc: OSError | RuntimeError, out: Path) -> str:
    """The message for what the training or the package write raised: a full disk (torch's ONNX export), or
    torch out of memory, ended minutes of training in a traceback (a review)."""
    if isinstance(exc, RuntimeError):
        return (f"error: training failed: {str(exc)[:300]} (a smaller --hidden, fewer students, or a "
                "machine with more memory)")
    where = exc.filename or out
    if exc.errno == errno.ENOSPC:
        return f"error: {where}: the disk is full: free space there (or give another --out), then train again"
    return f"error: {where}: {exc.strerror or exc}"


def _options(args: argparse.Namespace, embed: int) -> object:
    from edge_agent.kt.train import TrainOptions

    off = args.patience <= 0
    return TrainOptions(hidden=args.hidden, embed=embed, epochs=args.epochs, seed=args.seed,
                        patience=max(args.patience, 1), validation_share=0.0 if off else 0.1)


def cmd_kt_train(args: argparse.Namespace) -> int:
    try:
        from edge_agent.kt.build import build_from_sequences
        from edge_agent.kt.data import read_sequences
        from edge_agent.kt.school_bank import read_school_bank
    except ImportError as exc:
        print(f"training needs the train extra (pip install 'edge-agent[train]'): {exc}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _writable_out(args.out)
        bank = read_school_bank(args.skills, args.items)  # its mistakes before minutes of training
        train = read_sequences(args.train, args.format)
        test = read_sequences(args.test, args.format) if args.test else None
        for path, read in ((args.train, train), (args.test, test)):
            if read is not None and len(read) == 0:  # the error named no file (a review)
                raise EdgeAgentError(f"{path} holds no student's answers (empty, or only blank lines)")
        result = build_from_sequences(train, test, args.out, _options(args, 64), bank=bank)  # type: ignore[arg-type]
    except (EdgeAgentError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    except (OSError, RuntimeError) as exc:
        print(_failed(exc, args.out))
        return 1
    print(json.dumps(result))
    return 0


def cmd_kt_build_default(args: argparse.Namespace) -> int:
    try:
        from edge_agent.kt.build import build_default
    except ImportError as exc:
        print(f"building the default package needs the train extra: {exc}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _writable_out(args.out)
    except EdgeAgentError as exc:
        print(f"error: {exc}")
        return 1
    try:
        result = build_default(args.out, students=args.students, opts=_options(args, 32))  # type: ignore[arg-type]
    except (EdgeAgentError, ValueError) as exc:  # as kt train says them
        print(f"error: {exc}")
        return 1
    except (OSError, RuntimeError) as exc:
        print(_failed(exc, args.out))
        return 1
    print(json.dumps(result))
    return 0


def _writable_out(out: Path) -> None:
    """Before the training, not after it: a file or an unwritable folder as --out ended minutes of
    training in a traceback (a review)."""
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError as exc:  # torch's ONNX export: UTF-8 names only (a TypeError after training)
        shown = str(out).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise EdgeAgentError(f"--out {shown}: the name is not UTF-8 (made on a system with another "
                             "encoding): give a folder whose name is UTF-8") from exc
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".edge-agent-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EdgeAgentError(f"--out {out} cannot be written: {exc.strerror or exc}") from exc


def cmd_kt_roster(args: argparse.Namespace) -> int:
    """Turn the school's student ids into pseudonyms with this board's secret and update the roster file;
    the ids themselves are not written anywhere."""
    from edge_agent.config import find_config_path, load_config_for_command
    from edge_agent.kt.pseudonym import Pseudonymizer
    from edge_agent.kt.roster import read_student_ids, update_roster

    try:
        config = load_config_for_command(find_config_path(getattr(args, "config", None)))
        if config.kt.roster_file is None:
            print("error: kt.roster_file is not set in the config; set it (e.g. "
                  '"/var/lib/edge-agent/roster.txt") and run this again')
            return 2
        if (args.action == "count") != (args.list is None):
            print("error: give the list of student ids (or '-') to set, add or remove; none to count")
            return 2
        ids = [] if args.list is None else read_student_ids(args.list, args.column)
        secret_file = config.device.pseudonym_secret_file
        pseudonyms = {Pseudonymizer.from_file(secret_file)(i) for i in ids}
        before, after = update_roster(config.kt.roster_file, args.action, pseudonyms, owner_of=secret_file)
    except (EdgeAgentError, OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    if args.action == "count":  # nothing changed: not worded as a change (a README review)
        print(f"{config.kt.roster_file}: {after} students")
    else:
        print(f"{config.kt.roster_file}: {after} students (was {before}); the daemon reads it within seconds")
    return 0


def cmd_kt_erase(args: argparse.Namespace) -> int:
    """Ask the daemon on this board to erase the students (it holds their states and is the one writer)."""
    from edge_agent.config import find_config_path, load_config_for_command
    from edge_agent.kt.erasure import erase_requests
    from edge_agent.kt.roster import read_student_ids
    from edge_agent.web.erase import ERASE_PATH
    from edge_agent.web.local_api import LocalAPIError, post_local

    try:
        config = load_config_for_command(find_config_path(getattr(args, "config", None)))
        ids = [*args.student_ids, *([] if args.file is None else read_student_ids(args.file, args.column))]
        # here: an id typed with an invisible character inside is refused before anything is erased
        requests = erase_requests(ids)
    except (EdgeAgentError, OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    if not ids:
        print("error: name the students to erase (their school ids), or give --file")
        return 2
    totals = {"erased": 0, "without_data": 0}
    try:
        for request in requests:
            reply = post_local(config.web, ERASE_PATH, {"student_ids": request})
            for key in totals:
                totals[key] += int(reply[key])
    except LocalAPIError as exc:
        done = f" ({totals['erased']} students erased before it)" if totals["erased"] else ""
        print(f"error: {exc}{done}")
        return 1
    print(f"{totals['erased']} students had learning data on this board and it is erased; "
          f"{totals['without_data']} had none")
    print(reply["kept"])
    return 0
