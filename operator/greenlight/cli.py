"""The `greenlight` command: run the operator, create and decide requests, verify the audit log
and approval receipts.

Exit codes of `request --wait` and `wait`: 0 Approved, 2 Denied, 3 Expired, 4 Cancelled, 1 error.
Exit codes of `verify`: `VERIFY_EXIT_CODES` (0 valid; docs/receipts.md).
Exit codes of `exec`: the command's own; 125 when the receipt or the claim is refused (nothing
ran), 126 when the command cannot be run, 127 when it is not found, 128+N when signal N ended it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from greenlight.core import audit, receipts
from greenlight.core.durations import parse_timeout, parse_valid_for
from greenlight.core.model import Phase

EXIT_ERROR = 1
EXIT_UNANCHORED = 2
VERIFY_EXIT_CODES = {
    receipts.Outcome.VALID: 0,
    receipts.Outcome.MALFORMED: 2,
    receipts.Outcome.UNKNOWN_KEY: 3,
    receipts.Outcome.BAD_SIGNATURE: 4,
    receipts.Outcome.PLAN_MISMATCH: 5,
    receipts.Outcome.ACTION_MISMATCH: 6,
    receipts.Outcome.EXPIRED: 7,
}
EXIT_NO_RECEIPT = 8
EXIT_EXEC_REFUSED = 125
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not isinstance(exc, _expected_errors()):
            raise
        print(f"greenlight: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return result


def _expected_errors() -> tuple[type[Exception], ...]:
    """Errors that mean "bad input, could not talk to the cluster, or it said no" (exit 1, no
    traceback). The SDK's and the official client's are looked up only when their modules are
    loaded (nothing else can have raised them), so the operator imports neither."""
    errors: list[type[Exception]] = [ValueError, OSError]
    if "greenlight.client" in sys.modules:
        errors.append(sys.modules["greenlight.client"].GreenlightError)
    if "kubernetes.config" in sys.modules:
        errors.append(sys.modules["kubernetes.config"].ConfigException)
    return tuple(errors)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which `--wait` callers would read as Denied: exit 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="greenlight",
        description="A human approval gate for automation on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    op = sub.add_parser("operator", help="run the operator (kopf)")
    op.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch only this namespace (repeatable; default: all)",
    )
    op.add_argument("--metrics-port", type=int)
    op.add_argument("--health-port", type=int)
    op.add_argument("--webhook-port", type=int)
    op.add_argument("--webhook-host")
    op.add_argument("--audit-file", type=Path)
    op.add_argument("--peering", help="kopf peering name (empty: standalone)")
    op.add_argument("--priority", type=int)
    op.add_argument("--log-level")
    op.set_defaults(run=_operator)

    req = sub.add_parser("request", help="create an ApprovalRequest and print its name")
    _namespace(req)
    req.add_argument("--action", required=True, help='the command to run, e.g. "pulumi destroy"')
    req.add_argument("--target", required=True, help="what it affects, e.g. production")
    req.add_argument("--workflow-id", required=True)
    req.add_argument("--task-id")
    req.add_argument("--on-behalf-of", help="the human who launched the workflow")
    req.add_argument(
        "--plan-file", type=Path, help="plan details (e.g. preview output); - for stdin"
    )
    req.add_argument("--plan-summary", help="one line shown in notifications")
    req.add_argument("--timeout", help="1m..7d (default: the policy's default timeout, or 1h)")
    req.add_argument(
        "--plan-format",
        choices=["text", "pulumi-preview-json", "terraform-plan-json"],
        help="how Greenlight reads --plan-file (default text)",
    )
    req.add_argument(
        "--valid-for", help="how long the receipt may be used after approval, 1m..24h (default 15m)"
    )
    req.add_argument("--approvals", type=int, default=1, help="distinct approvers needed (1..10)")
    req.add_argument(
        "--approver", action="append", default=[], help="allowed approver (repeatable)"
    )
    req.add_argument("--approver-group", action="append", default=[], help="allowed group")
    req.add_argument("--slack-channel")
    req.add_argument("--name", help="explicit name (default: generated from the workflow id)")
    req.add_argument("--wait", action="store_true", help="block until decided; exit code = outcome")
    req.set_defaults(run=_request)

    for verb, helptext in (
        ("approve", "approve a request"),
        ("deny", "deny a request"),
        ("cancel", "cancel a pending request (requester or approver)"),
    ):
        cmd = sub.add_parser(verb, help=helptext)
        _namespace(cmd)
        cmd.add_argument("name")
        cmd.add_argument(
            "--reason", required=verb == "deny", default="", help="why (required to deny)"
        )
        cmd.set_defaults(run=_decide, verb=verb)

    again = sub.add_parser(
        "resubmit", help="create a new request with the spec of one that could not be verified"
    )
    _namespace(again)
    again.add_argument("name")
    again.set_defaults(run=_resubmit)

    get = sub.add_parser("get", help="show one request")
    _namespace(get)
    get.add_argument("name")
    get.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    get.set_defaults(run=_get)

    lst = sub.add_parser("list", help="list requests")
    _namespace(lst)
    lst.set_defaults(run=_list)

    wait = sub.add_parser("wait", help="wait for a decision; exit code = outcome")
    _namespace(wait)
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    wait.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="json: the outcome and its receipt",
    )
    wait.set_defaults(run=_wait)

    ask = sub.add_parser(
        "check",
        help="does this action need approval, under which policies (a dry run; nothing is created)",
        description="Exit codes: 0 no approval needed (AutoApprove), 2 approval required, "
        "3 refused by policy, 1 error.",
    )
    _namespace(ask)
    ask.add_argument("--action", required=True)
    ask.add_argument("--target", required=True)
    ask.add_argument("--workflow-id", default="greenlight-check")
    ask.add_argument("--plan-file", type=Path, help="plan details; - for stdin")
    ask.add_argument(
        "--plan-format",
        choices=["text", "pulumi-preview-json", "terraform-plan-json"],
        help="how Greenlight reads the plan file (default text)",
    )
    ask.add_argument("--timeout", help="the timeout you would ask for (default: the policy's)")
    ask.add_argument("--approvals", type=int, default=1)
    ask.add_argument("-o", "--output", choices=["text", "json"], default="text")
    ask.set_defaults(run=_check)

    check = sub.add_parser(
        "verify",
        help="check an approval receipt before running the action (offline with --receipt, --keys)",
    )
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--receipt",
        type=Path,
        help="the receipt as JSON: the envelope, `wait -o json` output, or the request itself",
    )
    source.add_argument("--request", metavar="NAME", help="read the receipt from this request")
    check.add_argument(
        "-n",
        "--namespace",
        help="the namespace whose approvals count: with --request, where the request is (default: "
        "the current one); with --receipt, the receipt must be for a request there (the "
        "namespace's approvers are the ones who said yes; checked only when given)",
    )
    check.add_argument("--plan-file", type=Path, required=True, help="the plan about to be run")
    check.add_argument("--action", required=True, help="the command about to be run")
    check.add_argument("--target", required=True, help="what it is about to affect")
    _keys_arguments(check, "--keys")
    check.set_defaults(run=_verify)

    run = sub.add_parser(
        "exec",
        help="run an approved action once: verify its receipt, claim it, run, record the finish",
        description="Exit codes: the command's own; 125 receipt or claim refused (nothing ran), "
        "126 the command cannot be run, 127 not found, 128+N ended by signal N.",
    )
    _namespace(run)
    run.add_argument("--request", metavar="NAME", required=True, help="the Approved request")
    run.add_argument("--plan-file", type=Path, required=True, help="the plan about to be run")
    run.add_argument("--action", help="the action about to be run (default: the request's)")
    run.add_argument("--target", help="what it is about to affect (default: the request's)")
    _keys_arguments(run, "--keys")
    run.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    run.set_defaults(run=_exec)

    rec = sub.add_parser("receipt", help="approval receipt tools")
    rec_sub = rec.add_subparsers(dest="receipt_command", metavar="COMMAND", required=True)
    keys = rec_sub.add_parser("keys", help="print the receipt public keys (PEM), for --keys")
    _keys_arguments(keys, "--key-file")
    keys.set_defaults(run=_receipt_keys)

    aud = sub.add_parser("audit", help="audit log tools")
    aud_sub = aud.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = aud_sub.add_parser("verify", help="check an audit log's hash chain")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--key-file", type=Path, help="the audit MAC key (checks every record's MAC)"
    )
    verify.add_argument(
        "--head",
        type=Path,
        help="head file to compare the log's end with (default FILE.head if present)",
    )
    _anchor_arguments(verify)
    verify.set_defaults(run=_audit_verify)
    show = aud_sub.add_parser(
        "show",
        help="print one request's story from the audit log, in order",
        description="Every record about requests named NAME (one block per uid: a name can be "
        "reused after a delete), oldest first. It reads; `audit verify` checks the chain.",
    )
    show.add_argument("name")
    show.add_argument(
        "--file",
        type=Path,
        default=Path("/var/lib/greenlight/audit/audit.jsonl"),
        help="the audit log (default /var/lib/greenlight/audit/audit.jsonl)",
    )
    show.add_argument("-n", "--namespace", help="only requests in this namespace")
    show.add_argument("--uid", help="only the request with this uid")
    show.add_argument("-o", "--output", choices=["text", "json"], default="text")
    show.set_defaults(run=_audit_show)
    reset = aud_sub.add_parser(
        "reset",
        help="accept a log that lost records: write an audited chain_reset record, re-anchor",
    )
    reset.add_argument("file", type=Path)
    reset.add_argument("--reason", required=True, help="why the chain is reset (recorded)")
    reset.add_argument("--key-file", type=Path, help="the audit MAC key (the operator's)")
    _anchor_arguments(reset)
    reset.set_defaults(run=_audit_reset)
    return parser


def _anchor_arguments(cmd: argparse.ArgumentParser) -> None:
    where = cmd.add_mutually_exclusive_group()
    where.add_argument(
        "--anchor",
        metavar="NAMESPACE/NAME",
        help="the anchor ConfigMap, e.g. greenlight/greenlight-audit-anchor-greenlight-0",
    )
    where.add_argument(
        "--anchor-file",
        type=Path,
        help="a saved copy of the anchor (the ConfigMap as JSON or YAML, or its data)",
    )


def _keys_arguments(cmd: argparse.ArgumentParser, file_flag: str) -> None:
    where = cmd.add_mutually_exclusive_group(required=True)
    where.add_argument(
        file_flag,
        dest="key_source",
        type=Path,
        help="public keys as PEM (the output of `greenlight receipt keys`)"
        if file_flag == "--keys"
        else "the operator's receipt key file (its public key is printed)",
    )
    where.add_argument(
        "--keys-configmap",
        metavar="NAMESPACE/NAME",
        help="the ConfigMap that publishes the keys, e.g. greenlight/greenlight-receipt-keys",
    )


def _namespace(cmd: argparse.ArgumentParser) -> None:
    from greenlight.config import ClientSettings

    cmd.add_argument("-n", "--namespace", default=ClientSettings().namespace)


def _client(args: argparse.Namespace) -> Any:
    from greenlight.client import ApprovalClient

    return ApprovalClient(namespace=args.namespace)


def _operator(args: argparse.Namespace) -> int:
    from greenlight.core.imports import absent

    with absent("kubernetes", "rich"):  # optional integrations of kopf and structlog
        from greenlight import app, config

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "run")}
    if overrides.get("namespaces"):
        overrides["namespaces"] = tuple(overrides["namespaces"])
    app.run(config.load(overrides))
    return 0


def _request(args: argparse.Namespace) -> int:
    if args.timeout is not None:
        parse_timeout(args.timeout)  # a bad value is named before any cluster is contacted
    if args.valid_for is not None:
        parse_valid_for(args.valid_for)
    details = None
    if args.plan_file is not None:
        details = sys.stdin.read() if str(args.plan_file) == "-" else args.plan_file.read_text()
    client = _client(args)
    name = client.create(
        action=args.action,
        target=args.target,
        workflow_id=args.workflow_id,
        task_id=args.task_id,
        on_behalf_of=args.on_behalf_of,
        plan_summary=args.plan_summary,
        plan_details=details,
        plan_format=args.plan_format,
        timeout=args.timeout,
        valid_for=args.valid_for,
        approvals=args.approvals,
        approvers_users=tuple(args.approver),
        approvers_groups=tuple(args.approver_group),
        slack_channel=args.slack_channel,
        name=args.name,
    )
    print(name, flush=True)
    if not args.wait:
        return 0
    return _report(client.wait(name))


def _check(args: argparse.Namespace) -> int:
    details = None
    if args.plan_file is not None:
        details = sys.stdin.read() if str(args.plan_file) == "-" else args.plan_file.read_text()
    answer = _client(args).check(
        action=args.action,
        target=args.target,
        workflow_id=args.workflow_id,
        plan_details=details,
        plan_format=args.plan_format,
        timeout=args.timeout,
        approvals=args.approvals,
    )
    code: int = answer.exit_code
    if args.output == "json":
        print(json.dumps(answer.to_json(), indent=2, sort_keys=True))
        return code
    if answer.outcome == "Refuse":
        print(f"refused: {answer.message}")
        return code
    policy = answer.policy
    sources = ", ".join(policy.get("from") or ()) or "no policy (the request's own rules)"
    if answer.outcome == "AutoApprove":
        print(f"no approval needed: auto-approved by {sources}")
        return code
    print(f"approval required by {sources}")
    print(f"  approvals: {policy.get('requiredApprovals', args.approvals)}")
    for restriction in policy.get("approvers") or ():
        users = ", ".join(restriction.get("users") or ()) or "-"
        groups = ", ".join(restriction.get("groups") or ()) or "-"
        print(f"  approvers: users {users}; groups {groups}")
    for need in policy.get("fromGroups") or ():
        print(f"  at least {need.get('count')} from group {need.get('group')}")
    if policy.get("timeout"):
        print(f"  timeout: {policy['timeout']}")
    return code


def _decide(args: argparse.Namespace) -> int:
    client = _client(args)
    getattr(client, args.verb)(args.name, reason=args.reason)
    print(f"{args.verb} recorded for {args.namespace}/{args.name}")
    return 0


def _resubmit(args: argparse.Namespace) -> int:
    print(_client(args).resubmit(args.name), flush=True)
    return 0


def _get(args: argparse.Namespace) -> int:
    obj = _client(args).get(args.name)
    obj.get("metadata", {}).pop("managedFields", None)
    if args.output == "json":
        print(json.dumps(obj, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump(obj, sort_keys=False), end="")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = [("NAME", "PHASE", "ACTION", "TARGET", "WORKFLOW", "EXPIRES")]
    for obj in _client(args).list():
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        rows.append(
            (
                obj["metadata"]["name"],
                status.get("phase", ""),
                spec.get("action", ""),
                spec.get("target", ""),
                (spec.get("requester") or {}).get("workflowId", ""),
                status.get("expiresAt", ""),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
    return 0


def _wait(args: argparse.Namespace) -> int:
    outcome = _client(args).wait(args.name, timeout=args.timeout)
    if args.output == "json":
        print(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
        code: int = outcome.exit_code
        return code
    return _report(outcome)


def _verify(args: argparse.Namespace) -> int:
    """One line: VALID on stdout (exit 0), or the failure and its reason on stderr."""
    from greenlight.core.timefmt import now

    expected: dict[str, str | None] = {"namespace": args.namespace}
    if args.receipt is not None:
        envelope = _receipt_of(json.loads(args.receipt.read_text()))
        where = str(args.receipt)
    else:
        if args.namespace is None:
            from greenlight.config import ClientSettings

            args.namespace = ClientSettings().namespace
        obj = _client(args).get(args.request)
        envelope = (obj.get("status") or {}).get("receipt")
        where = f"{args.namespace}/{args.request}"
        meta = obj.get("metadata") or {}
        expected = {"namespace": args.namespace, "name": args.request, "uid": meta.get("uid")}
        if envelope is None:
            phase = (obj.get("status") or {}).get("phase") or "not handled yet"
            print(f"{where}: NO RECEIPT: the request is {phase}, not Approved", file=sys.stderr)
            return EXIT_NO_RECEIPT
    result = receipts.verify(
        envelope,
        _public_keys(args),
        plan=args.plan_file.read_bytes(),
        action=args.action,
        target=args.target,
        now=now(),
        **expected,
    )
    label = result.outcome.value.upper().replace("_", " ")
    print(f"{where}: {label}: {result.reason}", file=sys.stdout if result.ok else sys.stderr)
    return VERIFY_EXIT_CODES[result.outcome]


def _exec(args: argparse.Namespace) -> int:
    """Verify, claim, run with the output streamed through, report the finish."""
    from greenlight.client import ExecutionRefused, GreenlightError

    command = list(args.command_line)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError("no command to run: greenlight exec --request NAME ... -- COMMAND ...")
    client = _client(args)
    where = f"{args.namespace}/{args.request}"
    try:
        run = client.claim(
            args.request,
            args.plan_file.read_bytes(),
            keys=_public_keys(args),
            action=args.action,
            target=args.target,
        )
    except ExecutionRefused as exc:
        label = exc.outcome.upper().replace("_", " ")
        print(f"greenlight exec: {where}: {label}: {exc} (nothing was run)", file=sys.stderr)
        return EXIT_EXEC_REFUSED
    print(f"greenlight exec: {where} claimed by {run.claimed_by}", file=sys.stderr, flush=True)
    code = _run_streamed(command)
    try:
        client.finish(args.request, code)
    except GreenlightError as exc:
        # The command ran: its exit code is still this process's. The claim stays open, visible
        # and alerted on (docs/receipts.md); the claimer closes it once the run is checked.
        print(
            f"greenlight exec: {where}: the finish could not be recorded ({exc}); the claim "
            f"stays open: kubectl annotate apr {args.request} -n {args.namespace} "
            f"greenlight.dev/finish={code}",
            file=sys.stderr,
        )
        return code
    print(f"greenlight exec: {where} finished with exit code {code}", file=sys.stderr)
    return code


def _run_streamed(command: list[str]) -> int:
    """Run `command` with this process's stdin, stdout and stderr; its exit code. Ctrl-C
    reaches the command (same process group) while this process waits to report the finish;
    SIGTERM is passed on to it."""
    import signal
    import subprocess

    try:
        child = subprocess.Popen(command)
    except FileNotFoundError:
        print(f"greenlight exec: {command[0]}: command not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except PermissionError:
        print(f"greenlight exec: {command[0]}: cannot be run", file=sys.stderr)
        return EXIT_CANNOT_RUN
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        returncode: int = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return 128 - returncode if returncode < 0 else returncode


def _receipt_of(data: Any) -> Any:
    """The envelope in a receipt file: the envelope itself, `wait -o json` output, or the
    request (`kubectl get -o json`)."""
    if isinstance(data, dict) and "payloadType" not in data:
        if isinstance(data.get("receipt"), dict):
            return data["receipt"]
        if isinstance(data.get("status"), dict) and "receipt" in data["status"]:
            return data["status"]["receipt"]
    return data


def _public_keys(args: argparse.Namespace) -> dict[str, Any]:
    from greenlight.core.dsse import parse_public_keys

    return parse_public_keys(_keys_text(args))


def _keys_text(args: argparse.Namespace) -> str:
    """The public keys (PEM) from the file or the ConfigMap named on the command line."""
    if args.key_source is not None:
        return str(args.key_source.read_text())
    from kubernetes import client

    from greenlight.kube import load_client_config

    namespace, _, name = args.keys_configmap.partition("/")
    if not namespace or not name:
        raise ValueError(f"--keys-configmap {args.keys_configmap!r}: expected NAMESPACE/NAME")
    core = client.CoreV1Api(load_client_config())
    configmap = _api(lambda: core.read_namespaced_config_map(name, namespace))
    return "".join(configmap.data[k] for k in sorted(configmap.data or {}) if k.endswith(".pem"))


def _receipt_keys(args: argparse.Namespace) -> int:
    """Each key as `keyid <hex>` and its PEM block (text outside PEM blocks is ignored by
    `--keys`, so the output is a keys file as it is)."""
    from greenlight.core.dsse import key_id, parse_private_key, parse_public_keys, public_pem

    if args.keys_configmap is None:
        public_key = parse_private_key(args.key_source.read_bytes()).public_key()
        keys = {key_id(public_key): public_key}
    else:
        keys = parse_public_keys(_keys_text(args))
    for keyid in sorted(keys):
        print(f"keyid {keyid}")
        print(public_pem(keys[keyid]), end="")
    return 0


def _report(outcome: Any) -> int:
    line = f"{outcome.name}: {outcome.phase.value}"
    if outcome.by:
        line += f" by {outcome.by}"
    if outcome.via:
        line += f" via {outcome.via}"
    if outcome.reason:
        line += f" ({outcome.reason})"
    print(line, file=sys.stderr if outcome.phase is not Phase.APPROVED else sys.stdout)
    code: int = outcome.exit_code
    return code


def _audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 intact and anchored, 1 TAMPERED (or unreadable), 2 intact but unanchored."""
    from greenlight.adapters.auditlog import read_head

    key = args.key_file.read_bytes().strip() if args.key_file else None
    try:
        head: audit.Head | None
        if args.head is not None:
            head = audit.parse_head_text(args.head.read_text(), source=f"head file {args.head}")
        else:
            head = read_head(args.file)
        anchor = _read_anchor(args)
    except audit.HeadError as exc:
        print(f"{args.file}: TAMPERED: {exc}", file=sys.stderr)
        return EXIT_ERROR
    checks: dict[str, Any] = {"key": key, "head": head, "anchor": anchor, "require_anchor": True}
    if not args.file.exists() and (head is not None or anchor is not None):
        result = audit.verify([], **checks)  # a vanished log, against what it should hold
    else:
        with args.file.open(encoding="utf-8", newline="") as handle:
            result = audit.verify(audit.read_lines(handle), **checks)
    if result.ok:
        print(f"{args.file}: OK, {result.message}")
        if key is None:
            print(
                f"{args.file}: note: without --key-file only the hash chain was checked, not the "
                "records' MACs: whoever can write the file could have rewritten it and its head "
                "consistently",
                file=sys.stderr,
            )
        return 0
    if result.message == audit.UNANCHORED:
        print(
            f"{args.file}: UNANCHORED: {result.records} records, chain intact, but there is no "
            "head file or anchor to compare its end with, so a cut tail would go unseen; "
            "pass --head, --anchor or --anchor-file",
            file=sys.stderr,
        )
        return EXIT_UNANCHORED
    print(f"{args.file}: TAMPERED: {result.message}", file=sys.stderr)
    return EXIT_ERROR


def _audit_show(args: argparse.Namespace) -> int:
    """Exit 0 when records were found, 1 when none (or the file cannot be read)."""
    stories: dict[str, list[dict[str, Any]]] = {}
    unreadable = 0
    with args.file.open(encoding="utf-8", errors="replace") as handle:
        for line in audit.read_lines(handle):
            try:
                record = json.loads(line)
            except ValueError:
                unreadable += 1
                continue
            subject = record.get("request") if isinstance(record, dict) else None
            if not isinstance(subject, dict) or subject.get("name") != args.name:
                continue
            if args.namespace is not None and subject.get("namespace") != args.namespace:
                continue
            uid = str(subject.get("uid") or "")
            if args.uid is not None and uid != args.uid:
                continue
            stories.setdefault(uid, []).append(record)
    if unreadable:
        print(
            f"greenlight: {unreadable} lines of {args.file} are not JSON records "
            "(run `greenlight audit verify`)",
            file=sys.stderr,
        )
    if not stories:
        print(f"greenlight: no audit record about a request named {args.name}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        print(json.dumps([r for story in stories.values() for r in story], indent=2))
        return 0
    for uid, story in stories.items():
        subject = story[0]["request"]
        print(f"{subject.get('namespace')}/{subject.get('name')}  uid {uid or '-'}")
        for record in story:
            print("  " + _story_line(record))
    return 0


def _story_line(record: dict[str, Any]) -> str:
    """One audit record as a line for people: time, event, who, outcome, what it says."""
    raw = record.get("details")
    details: dict[str, Any] = raw if isinstance(raw, dict) else {}
    event = str(record.get("event", "?"))
    parts = [str(record.get("time", "?")), event.ljust(18), f"by {record.get('actor', '?')}"]
    outcome = record.get("outcome")
    if outcome:
        parts.append(str(outcome))
    if record.get("reason"):
        parts.append(f"({record['reason']})")
    shown = {
        "requested": ("planDigest", "expiresAt"),
        "notified": ("notifier", "channel"),
        "decision_attempted": ("action", "via", "message", "count"),
        "decided": ("via", "approvals"),
        "receipt_issued": ("digest", "keyid"),
        "claimed": ("receiptDigest", "secondsAfterApproval"),
        "finished": ("exitCode", "durationSeconds"),
        "claim_attempted": ("message",),
        "finish_attempted": ("message",),
        "reminded": ("channel",),
        "escalated": ("channel",),
    }.get(event, ())
    extra = [f"{key}={details[key]}" for key in shown if details.get(key) not in (None, "")]
    if event == "requested" and isinstance(details.get("spec"), dict):
        spec = details["spec"]
        extra.insert(0, f"action={spec.get('action')!r} target={spec.get('target')!r}")
    return "  ".join(parts + extra)


def _audit_reset(args: argparse.Namespace) -> int:
    import getpass

    from greenlight.adapters.auditlog import AuditLog, AuditLogLocked

    key = args.key_file.read_bytes().strip() if args.key_file else None
    try:
        previous = _read_anchor(args)
    except audit.HeadError as exc:
        print(
            f"greenlight: the old anchor is unreadable ({exc}); resetting anyway", file=sys.stderr
        )
        previous = None
    actor = _on_anchor(args, _cluster_user) if args.anchor else getpass.getuser()
    try:
        log = AuditLog(args.file, key=key)
    except AuditLogLocked as exc:
        raise ValueError(f"{exc}; reset only a log no operator is writing") from None
    try:
        record = log.reset(actor=actor, reason=args.reason, anchor=previous)
        head = log.head
    finally:
        log.close()
    if args.anchor:
        _on_anchor(args, lambda anchor: anchor.write(head, args.file.name))
    elif args.anchor_file is not None:
        args.anchor_file.write_text(json.dumps(head.to_json()) + "\n")
    print(
        f"{args.file}: chain reset by {actor} at record {record['seq']}; "
        f"the head{' and anchor' if args.anchor or args.anchor_file else ''} now record {head.seq}"
    )
    return 0


def _on_anchor(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    """`work(anchor)` on the anchor ConfigMap named by --anchor, over one connection closed
    afterwards; an API refusal becomes a one-line message (exit 1)."""
    import asyncio

    import aiohttp

    from greenlight.adapters.auditanchor import AuditAnchor
    from greenlight.kube import ApiError, Conflict, Credentials, Kube, NotFound, load_client_config

    namespace, _, name = args.anchor.partition("/")
    if not namespace or not name:
        raise ValueError(f"--anchor {args.anchor!r}: expected NAMESPACE/NAME")

    async def run() -> T:
        client = load_client_config()
        kube = Kube(Credentials.of_client(client))
        try:
            return await work(AuditAnchor(kube, namespace, name))
        finally:
            await kube.close()
            client.close()  # type: ignore[no-untyped-call]  # the official client has no hints

    try:
        return asyncio.run(run())
    except NotFound:
        raise ValueError(
            f"--anchor {args.anchor}: not found (does the namespace {namespace!r} exist?)"
        ) from None
    except (ApiError, Conflict) as exc:
        raise ValueError(f"the Kubernetes API refused: {exc}") from None
    except aiohttp.ClientError as exc:
        raise ValueError(f"cannot reach the Kubernetes API: {exc}") from None


def _read_anchor(args: argparse.Namespace) -> audit.Head | None:
    """The anchor named by --anchor or --anchor-file; None when neither was given. An anchor
    named but absent from the cluster is reported (a deleted anchor is no anchor to trust)."""
    if args.anchor_file is not None:
        source = f"anchor file {args.anchor_file}"
        try:
            data = yaml.safe_load(args.anchor_file.read_text())
        except yaml.YAMLError:
            raise audit.HeadError(f"{source} is neither JSON nor YAML") from None
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]
        return audit.parse_head(data, source=source)
    if not args.anchor:
        return None
    head: audit.Head | None = _on_anchor(args, lambda anchor: anchor.read())
    if head is None:
        raise audit.HeadError(
            f"the anchor ConfigMap {args.anchor} does not exist (deleted, or a wrong name)"
        )
    return head


async def _cluster_user(anchor: Any) -> str:
    """Who the cluster says we are (a SelfSubjectReview)."""
    return str((await anchor.kube.whoami()).user)


def _api(call: Any) -> Any:
    """Run one Kubernetes call; an API error becomes a one-line message (exit 1)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return call()
    except ApiException as exc:
        raise ValueError(f"the Kubernetes API refused: {exc.status} {exc.reason}") from None


if __name__ == "__main__":
    sys.exit(main())
