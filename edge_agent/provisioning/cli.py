"""Command lines: ``edge-agent-provision`` (also ``edge-agent provision`` once mounted) and
``edge-agent model sign|verify|keygen``. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from edge_agent.errors import ConfigError, ProvisioningError
from edge_agent.provisioning import system
from edge_agent.provisioning.enroll import check_enrollment
from edge_agent.provisioning.inventory import load_inventory
from edge_agent.provisioning.model_package import (
    generate_signing_key,
    is_package_tar,
    load_public_key,
    sign_package,
    stage_and_verify,
)
from edge_agent.provisioning.provision import (
    Options,
    Result,
    check_root,
    provision_board,
    provision_inventory,
)

EXIT_AWAITING_CERT = 3


def add_provision_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "provision", help="provision this board or target roots from the fleet inventory"
    )
    _provision_arguments(p)
    p.set_defaults(func=cmd_provision)
    return p


def _broker_address(text: str) -> tuple[str, int]:
    """HOST:PORT, checked before any board is written."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. mqtt.district.example:8883)")
    return host, int(port)


def _provision_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inventory", type=Path, required=True, help="fleet inventory CSV")
    p.add_argument("--template", type=Path, required=True, help="fleet config template (TOML)")
    p.add_argument("--device-id", help="provision only this board of the inventory (required with --root /)")
    p.add_argument("--root", type=Path, default=Path("/"), help="target root (default: this board)")
    p.add_argument("--roots", type=Path, help="bulk: one target root per board, ROOTS/<device_id>")
    p.add_argument("--ca-dir", type=Path, help="lab CA directory: sign the board's CSR at once")
    p.add_argument(
        "--replace", action="store_true",
        help="with --ca-dir, in a run for one board (--root, or a one-board inventory): this board replaces "
        "another with its device id; revoke that board's certificate",
    )
    p.add_argument("--cert", type=Path, help="the board's certificate, signed by the fleet CA")
    p.add_argument("--ca-cert", type=Path, help="the fleet CA certificate (with --cert)")
    p.add_argument("--units-dir", type=Path, help="where edge-agent.service and friends are")
    p.add_argument("--agent-bin", default=system.DEFAULT_BIN, help="the installed edge-agent executable")
    p.add_argument(
        "--model-signing-key", type=Path, help="ed25519 public key model packages must be signed with"
    )
    p.add_argument(
        "--enroll",
        metavar="HOST:PORT",
        type=_broker_address,
        help="after provisioning, publish a hello to this broker",
    )
    p.add_argument("--no-activate", action="store_true", help="on /: do not enable units or start the build")
    p.add_argument(
        "--metrics-token-file", type=Path, metavar="FILE",
        help="the fleet's Prometheus token, installed as secrets/metrics.token (metrics.token_file names it)",
    )
    p.add_argument(
        "--web-domain", metavar="DOMAIN",
        help="the school's DNS domain: the certificate also serves HTTPS as <device id>.DOMAIN",
    )


def cmd_provision(args: argparse.Namespace) -> int:
    try:
        opts = Options(
            template_text=_read_template(Path(args.template)),
            ca_dir=args.ca_dir,
            cert_file=args.cert,
            ca_file=args.ca_cert,
            units_dir=args.units_dir,
            agent_bin=args.agent_bin,
            signing_pubkey=args.model_signing_key,
            activate=not args.no_activate,
            replace=args.replace,
            one_board=args.roots is None,  # --root: the one board --device-id names
            web_domain=args.web_domain,
            metrics_token_file=args.metrics_token_file,
        )
        if args.roots is not None:
            if args.device_id is not None:  # was ignored: every board of the inventory was provisioned
                raise ProvisioningError(
                    "--device-id picks one board for --root; --roots provisions every board of the inventory "
                    "(give a one-board inventory, or --root ROOTS/<device id> --device-id ID)"
                )
            results = provision_inventory(args.inventory, args.roots, opts)
        else:
            if args.device_id is None:
                raise ProvisioningError(
                    "give --device-id ID (which board of the inventory this is), or --roots DIR for all"
                )
            boards = [b for b in load_inventory(args.inventory) if b.device_id == args.device_id]
            if not boards:
                raise ProvisioningError(
                    f"device id {args.device_id!r} is not in {args.inventory} (use --device-id)"
                )
            results = [provision_board(boards[0], args.root, opts)]
        for result in results:
            _report(result)
            if result.state != "awaiting-certificate":
                check_root(result.root)
        refused = _enroll(results, *args.enroll) if args.enroll else []
    except (ProvisioningError, ConfigError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if refused:
        print(f"error: {len(refused)} board(s) not enrolled: {', '.join(refused)} (why: above)",
              file=sys.stderr)
        return 2
    return EXIT_AWAITING_CERT if any(r.state == "awaiting-certificate" for r in results) else 0


def _enroll(results: list[Result], host: str, port: int) -> list[str]:
    """Send each provisioned board's hello; the ids of those the broker did not take. Each is tried: the
    first refusal (a TLS one, naming no board) ended a bulk run and left the rest untried (a review)."""
    refused = []
    for result in results:
        board = result.board
        if result.state != "provisioned":  # nothing to enrol with (was a bare "[Errno 2]", rc 2)
            revoked = result.state == "revoked"
            why = "its certificate is revoked" if revoked else "awaiting its certificate"
            print(f"{board.device_id}: not enrolled: {why}")
            continue
        etc = result.root / "etc/edge-agent"
        try:
            check_enrollment(
                host,
                port,
                etc / "certs/ca.pem",
                etc / "certs/device.pem",
                etc / "secrets/device.key",
                tenant=board.tenant,
                site=board.site,
                device_id=board.device_id,
            )
        except ProvisioningError as exc:
            print(f"{board.device_id}: not enrolled: {exc}")
            refused.append(board.device_id)
            continue
        print(f"{board.device_id}: enrolled (hello accepted by {host}:{port})")
    return refused


def _read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"--template {path}: cannot read the fleet template ({exc})") from exc


def _report(result: Result) -> None:
    changes = ", ".join(result.changes) if result.changes else "nothing to change"
    state = "revoked, kept so (the broker refuses it)" if result.state == "revoked" else result.state
    print(f"{result.device_id} [{result.root}]: {state}; {changes}")
    if result.state == "awaiting-certificate":
        print(
            f"  send {result.root / 'etc/edge-agent/certs/device.csr'} to the fleet CA, then re-run with "
            "--cert FILE --ca-cert FILE"
        )
    if result.daemon_waits_for:
        print(f"  edge-agent.service is installed but not enabled: the daemon cannot start without "
              f"{', '.join(result.daemon_waits_for)}. The re-run that installs it enables it; then "
              "`systemctl start edge-agent` on the board (or reboot it)")


def add_model_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser("model", help="sign and verify model packages")
    _model_commands(p)
    p.set_defaults(func=cmd_model)
    return p


def _model_commands(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="model_command", required=True)
    keygen = sub.add_parser("keygen", help="create the fleet's ed25519 model signing key pair")
    keygen.add_argument("private", type=Path)
    keygen.add_argument("public", type=Path)
    sign = sub.add_parser("sign", help="write manifest.json and manifest.sig into a package directory")
    sign.add_argument("package", type=Path)
    sign.add_argument("--key", type=Path, required=True)
    sign.add_argument("--name", required=True)
    sign.add_argument("--version", required=True)
    verify = sub.add_parser("verify", help="check a package's (directory or tar) signature and file hashes")
    verify.add_argument("package", type=Path)
    verify.add_argument("--pubkey", type=Path, action="append", required=True)


def cmd_model(args: argparse.Namespace) -> int:
    try:
        if args.model_command == "keygen":
            generate_signing_key(args.private, args.public)
            print(f"keep {args.private} offline; install {args.public} on boards (--model-signing-key)")
        elif args.model_command == "sign":
            manifest = sign_package(args.package, args.key, args.name, args.version)
            print(f"signed {manifest.name} {manifest.version}: {len(manifest.files)} files")
        else:
            keys = [load_public_key(p) for p in args.pubkey]
            if args.package.is_file() and not is_package_tar(args.package):
                raise ProvisioningError(f"{args.package} is neither a package folder nor a tar archive")
            with tempfile.TemporaryDirectory() as staging:  # a folder or a tar, checked as boards check it
                manifest = stage_and_verify(args.package, Path(staging) / "package", keys)
            print(f"ok: {manifest.name} {manifest.version}, {len(manifest.files)} files verified")
    except ProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a key or package folder the user cannot write: a read-only mount, root's folder
        where = f"{exc.filename}: " if exc.filename else ""
        then = {"keygen": "no key was kept; give paths this user can write and run it again",
                "sign": "the package is not signed; make its folder writable and sign it again"}
        print(f"error: {where}{exc.strerror or exc}: {then.get(args.model_command, 'nothing was done')}",
              file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="edge-agent-provision", description=__doc__)
    _provision_arguments(parser)
    return cmd_provision(parser.parse_args(argv))


def model_main(argv: list[str] | None = None) -> int:
    # its own parser, so that usage lines read "edge-agent-model sign ...", not "... model sign"
    parser = argparse.ArgumentParser(prog="edge-agent-model")
    _model_commands(parser)
    return cmd_model(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
