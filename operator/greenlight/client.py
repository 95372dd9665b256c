"""The orchestrator's SDK: create an ApprovalRequest, and wait for a person's answer.

    from greenlight.client import ApprovalClient
    client = ApprovalClient(namespace="ci")
    name = client.create(action="pulumi destroy", target="production", workflow_id="wf-1")
    outcome = client.wait(name)          # or: await client.async_wait(name)
    if outcome.phase is Phase.APPROVED: ...

The caller's current OpenTelemetry trace context travels with the request (annotation
`greenlight.dev/traceparent`), so the operator's spans join the orchestrator's trace.
Decisions made through this client (`approve`, `deny`, `cancel`) are ordinary annotations: the
admission webhook authenticates and authorizes the caller exactly as for `kubectl annotate`.

Running the approved action once (docs/receipts.md):

    with client.execution(name, plan_bytes, keys=keys_pem) as run:
        subprocess.run([...], check=True)     # an exception is reported as exit code 1
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kubernetes.client.exceptions import ApiException

from greenlight.core import receipts
from greenlight.core.dsse import parse_public_keys
from greenlight.core.durations import parse_timeout, parse_valid_for
from greenlight.core.model import (
    ANN_CANCEL,
    ANN_CLAIM,
    ANN_DECISION,
    ANN_EXECUTION,
    ANN_FINISH,
    ANN_REASON,
    ANN_REQUESTED_BY,
    ANN_TRACEPARENT,
    GROUP,
    KIND,
    PLURAL,
    POLICY_REFUSAL,
    VERSION,
    Phase,
)
from greenlight.core.stamps import ExecutionRecord
from greenlight.core.timefmt import format_time, now
from greenlight.kube import load_client_config
from greenlight.telemetry import traces

EXIT_CODES = {Phase.APPROVED: 0, Phase.DENIED: 2, Phase.EXPIRED: 3, Phase.CANCELLED: 4}


class GreenlightError(Exception):
    """A request could not be created, found or decided; the message says why."""


@dataclass(frozen=True)
class Outcome:
    name: str
    phase: Phase
    by: str
    via: str
    reason: str
    receipt: dict[str, Any] | None = None  # the signed receipt (DSSE envelope), when Approved

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.phase]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase.value,
            "by": self.by,
            "via": self.via,
            "reason": self.reason,
            "receipt": self.receipt,
        }


class ExecutionRefused(GreenlightError):
    """The receipt did not verify, or the claim was refused (claimed already, not the
    requester, too late): nothing was run. `outcome` is the verification outcome or the
    webhook's refusal code; the message says why."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass
class Run:
    """One claimed execution. Set `exit_code` inside `execution()` to report a code other than
    0 (normal exit) or 1 (an exception)."""

    name: str
    claimed_by: str
    claimed_at: str
    exit_code: int | None = None


CHECK_EXIT_CODES = {"AutoApprove": 0, "RequireApproval": 2, "Refuse": 3}


@dataclass(frozen=True)
class PolicyAnswer:
    """What `check` found: the outcome (AutoApprove | RequireApproval | Refuse), the refusal
    message, and the effective policy as it would be stamped (`status.policy`)."""

    outcome: str
    message: str
    policy: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return CHECK_EXIT_CODES.get(self.outcome, 1)

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "message": self.message, "policy": self.policy}


def api_message(exc: ApiException) -> str:
    """The API server's (or the admission webhook's) own explanation of a refusal."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


class ApprovalClient:
    def __init__(
        self,
        namespace: str = "default",
        *,
        kubeconfig: str | None = None,
        api_client: kubernetes.client.ApiClient | None = None,
    ) -> None:
        self.namespace = namespace
        self.api_client = api_client or load_client_config(kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        # The uid of each request this client created, by name: `wait` and `claim` follow that
        # object, not another one created later under the same name.
        self._created: dict[str, str] = {}

    def manifest(
        self,
        *,
        action: str,
        target: str,
        workflow_id: str,
        task_id: str | None = None,
        on_behalf_of: str | None = None,
        plan_summary: str | None = None,
        plan_details: str | None = None,
        plan_format: str | None = None,
        timeout: str | None = None,
        valid_for: str | None = None,
        approvals: int = 1,
        approvers_users: tuple[str, ...] = (),
        approvers_groups: tuple[str, ...] = (),
        slack_channel: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """The ApprovalRequest to create; the caller's trace context rides along. Without
        `timeout` the request gets its policies' default (or 1h)."""
        if timeout is not None:
            parse_timeout(timeout)
        if valid_for is not None:
            parse_valid_for(valid_for)
        requester: dict[str, Any] = {"workflowId": workflow_id}
        if task_id:
            requester["taskId"] = task_id
        if on_behalf_of:
            requester["onBehalfOf"] = on_behalf_of
        spec: dict[str, Any] = {
            "action": action,
            "target": target,
            "requester": requester,
            "policy": {"requiredApprovals": approvals},
        }
        if timeout is not None:
            spec["timeout"] = timeout
        if valid_for is not None:
            spec["validFor"] = valid_for
        if approvers_users or approvers_groups:
            spec["policy"]["approvers"] = {
                "users": list(approvers_users),
                "groups": list(approvers_groups),
            }
        if plan_summary is not None or plan_details is not None:
            spec["plan"] = {"summary": plan_summary or "", "details": plan_details or ""}
        if plan_format is not None:
            spec.setdefault("plan", {})["format"] = plan_format
        if slack_channel:
            spec["notify"] = {"slack": {"channel": slack_channel}}
        metadata: dict[str, Any] = {"namespace": self.namespace}
        if name:
            metadata["name"] = name
        else:
            metadata["generateName"] = _name_prefix(workflow_id)
        traceparent = traces.current_traceparent()
        if traceparent:
            metadata["annotations"] = {ANN_TRACEPARENT: traceparent}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": metadata,
            "spec": spec,
        }

    def create(self, **fields: Any) -> str:
        """Create a request (fields as for `manifest`); return its name."""
        return self._submit(self.manifest(**fields))

    async def async_create(self, **fields: Any) -> str:
        """`create` without blocking the event loop (the trace context is taken from here)."""
        body = self.manifest(**fields)
        return await asyncio.to_thread(self._submit, body)

    def _submit(self, body: dict[str, Any]) -> str:
        try:
            created: Any = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as exc:
            raise GreenlightError(f"cannot create the request: {api_message(exc)}") from exc
        name = str(created["metadata"]["name"])
        self._created[name] = str(created["metadata"].get("uid", ""))
        return name

    def check(self, **fields: Any) -> PolicyAnswer:
        """Whether a request with these fields (as for `create`) would need approval, under
        which policies and rules, without creating anything: a server-side dry run of the
        create, so the admission webhook answers exactly as it would for the real one. The
        caller needs only the right to create requests, not to read policies."""
        body = self.manifest(**fields)
        try:
            created: Any = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body, dry_run="All"
            )
        except ApiException as exc:
            message = api_message(exc)
            if exc.status == 403 and POLICY_REFUSAL in message:
                return PolicyAnswer("Refuse", message[message.index(POLICY_REFUSAL) :], {})
            raise GreenlightError(f"cannot check the request: {message}") from exc
        stamp = ((created.get("metadata") or {}).get("annotations") or {}).get(ANN_REQUESTED_BY, "")
        try:
            policy = json.loads(stamp).get("policy") or {}
        except (ValueError, AttributeError) as exc:
            raise GreenlightError(
                "the dry run came back without Greenlight's stamp: is the operator's admission "
                "webhook installed for this namespace?"
            ) from exc
        outcome = str(policy.get("outcome") or "RequireApproval")
        return PolicyAnswer(outcome, "", dict(policy))

    async def async_check(self, **fields: Any) -> PolicyAnswer:
        """`check` without blocking the event loop."""
        return await asyncio.to_thread(functools.partial(self.check, **fields))

    def resubmit(self, name: str) -> str:
        """Create a new request with the spec of `name` (for one that Greenlight could not
        verify: written while no admission webhook covered it); return the new name. The new
        request is stamped with the caller as its creator; the old one is left as it is."""
        old = self.get(name)
        metadata: dict[str, Any] = {"generateName": f"{name[:50]}-"}
        traceparent = (old["metadata"].get("annotations") or {}).get(ANN_TRACEPARENT)
        if traceparent:
            metadata["annotations"] = {ANN_TRACEPARENT: traceparent}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": metadata,
            "spec": old["spec"],
        }
        return self._submit(body)

    def get(self, name: str) -> dict[str, Any]:
        try:
            obj: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            raise GreenlightError(
                f"cannot read {self.namespace}/{name}: {api_message(exc)}"
            ) from exc
        return dict(obj)

    def list(self) -> list[dict[str, Any]]:
        try:
            result: Any = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL
            )
        except ApiException as exc:
            raise GreenlightError(f"cannot list requests: {api_message(exc)}") from exc
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def approve(self, name: str, reason: str = "") -> None:
        self._annotate(name, {ANN_DECISION: "approve", ANN_REASON: reason or None})

    def deny(self, name: str, reason: str) -> None:
        self._annotate(name, {ANN_DECISION: "deny", ANN_REASON: reason or None})

    def cancel(self, name: str, reason: str = "") -> None:
        self._annotate(name, {ANN_CANCEL: "true", ANN_REASON: reason or None})

    def _annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        body = {
            "metadata": {"annotations": {k: v for k, v in annotations.items() if v is not None}}
        }
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, body
            )
        except ApiException as exc:
            raise GreenlightError(api_message(exc)) from exc

    def claim(
        self,
        name: str,
        plan: bytes,
        *,
        keys: str | Mapping[str, Ed25519PublicKey],
        action: str | None = None,
        target: str | None = None,
    ) -> Run:
        """Verify the receipt of `name` for `plan` (and for `action`/`target`, by default the
        request's own), then claim it on the API server: a compare-and-swap on the request
        that the admission webhook admits for the requester only, once, before notAfter.
        Raises ExecutionRefused when either fails; nothing is claimed then."""
        public = parse_public_keys(keys) if isinstance(keys, str) else keys
        for _ in range(5):
            obj = self.get(name)
            self._same(name, obj, self._created.get(name, ""))
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            envelope = status.get("receipt")
            if envelope is None:
                phase = status.get("phase") or "not handled yet"
                raise ExecutionRefused("no_receipt", f"{name} is {phase}: it has no receipt")
            existing = _execution_of(obj)
            if existing is not None:
                state = "finished" if existing.finished else "not finished"
                raise ExecutionRefused(
                    receipts.ALREADY_CLAIMED,
                    f"already claimed by {existing.user} at "
                    f"{format_time(existing.claimed_at)} ({state})",
                )
            result = receipts.verify(
                envelope,
                public,
                plan=plan,
                action=action if action is not None else str(spec.get("action", "")),
                target=target if target is not None else str(spec.get("target", "")),
                now=now(),
                namespace=self.namespace,
                name=name,
                uid=str((obj.get("metadata") or {}).get("uid", "")),
            )
            if not result.ok:
                raise ExecutionRefused(result.outcome.value, result.reason)
            digest = "sha256:" + receipts.plan_sha256(plan)
            body = {
                "metadata": {
                    "resourceVersion": obj["metadata"]["resourceVersion"],
                    "annotations": {ANN_CLAIM: digest},
                }
            }
            try:
                claimed: Any = self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, body
                )
            except ApiException as exc:
                if exc.status == 409:  # changed since it was read: read again, decide again
                    continue
                raise ExecutionRefused("refused", api_message(exc)) from exc
            record = _execution_of(claimed)
            if record is None:
                raise GreenlightError(
                    "the claim came back without Greenlight's execution record: is the "
                    "operator's admission webhook installed for this namespace?"
                )
            return Run(name, record.user, format_time(record.claimed_at))
        raise GreenlightError(f"{self.namespace}/{name} kept changing; claim again")

    def finish(self, name: str, exit_code: int | str) -> None:
        """Report how the claimed command ended (0..255, or "unknown"); retried on errors
        that may be passing, since a claim without a finish raises an alert."""
        body = {"metadata": {"annotations": {ANN_FINISH: str(exit_code)}}}
        delay = 0.5
        for attempt in range(6):
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, body
                )
                return
            except ApiException as exc:
                if exc.status not in (409, 429, 500, 502, 503, 504) or attempt == 5:
                    raise GreenlightError(
                        f"cannot report the finish of {name}: {api_message(exc)}"
                    ) from exc
            except OSError as exc:  # connection trouble (urllib3 errors are OSErrors)
                if attempt == 5:
                    raise GreenlightError(f"cannot report the finish of {name}: {exc}") from exc
            time.sleep(delay)
            delay *= 2

    @contextlib.contextmanager
    def execution(
        self,
        name: str,
        plan: bytes,
        *,
        keys: str | Mapping[str, Ed25519PublicKey],
        action: str | None = None,
        target: str | None = None,
    ) -> Iterator[Run]:
        """Claim the receipt (`claim`), run the block, report the finish: `run.exit_code` if
        set, else 0, or 1 when the block raises (130 on KeyboardInterrupt)."""
        run = self.claim(name, plan, keys=keys, action=action, target=target)
        try:
            yield run
        except KeyboardInterrupt:
            self.finish(name, 130)
            raise
        except BaseException:
            self.finish(name, run.exit_code if run.exit_code else 1)
            raise
        self.finish(name, run.exit_code or 0)

    def wait(self, name: str, timeout: float | None = None) -> Outcome:
        """Block until the request is terminal; raise GreenlightError after `timeout` seconds.
        The request followed is the object this client created under `name` (else the one the
        first read finds): when it is deleted and another is created under the same name, that
        one's outcome is never taken for it (GreenlightError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        uid = self._created.get(name, "")
        while True:
            obj = self.get(name)
            uid = uid or str(obj["metadata"].get("uid", ""))
            self._same(name, obj, uid)
            outcome = _outcome(obj)
            if outcome is not None:
                return outcome
            try:
                return self._watch(name, obj["metadata"]["resourceVersion"], uid, deadline, timeout)
            except ApiException as exc:
                if exc.status != 410:  # 410: the watch expired: read afresh and go on
                    raise GreenlightError(
                        f"cannot watch {self.namespace}/{name}: {api_message(exc)}"
                    ) from exc

    def _watch(
        self, name: str, version: str, uid: str, deadline: float | None, timeout: float | None
    ) -> Outcome:
        watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise GreenlightError(
                        f"{self.namespace}/{name} is still Pending after {timeout}s"
                    )
                stream = watch.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=int(min(remaining or 300, 300)) or 1,
                )
                for event in stream:
                    current = event["object"]
                    version = current["metadata"]["resourceVersion"]
                    if event["type"] == "DELETED":
                        raise GreenlightError(f"{self.namespace}/{name} was deleted while waiting")
                    self._same(name, current, uid)
                    outcome = _outcome(current)
                    if outcome is not None:
                        return outcome
        finally:
            watch.stop()  # type: ignore[no-untyped-call]

    def _same(self, name: str, obj: Mapping[str, Any], uid: str) -> None:
        found = str((obj.get("metadata") or {}).get("uid", ""))
        if uid and found != uid:
            raise GreenlightError(
                f"{self.namespace}/{name} was deleted and created again (uid {found}, not {uid}): "
                "its outcome is not the one waited for"
            )

    async def async_wait(self, name: str, limit: float | None = None) -> Outcome:
        """`wait` without blocking the event loop; `limit` in seconds."""
        return await asyncio.to_thread(self.wait, name, limit)


def _execution_of(obj: Mapping[str, Any]) -> ExecutionRecord | None:
    """The execution record on an object, as shown (the operator checks its MAC)."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_EXECUTION)
    if not text:
        return None
    try:
        return ExecutionRecord.from_annotation(text)
    except ValueError:
        return None


def _name_prefix(workflow_id: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in workflow_id.lower()).strip("-")
    return (cleaned[:40] or "apr") + "-"


def _outcome(obj: dict[str, Any]) -> Outcome | None:
    status = obj.get("status") or {}
    phase = Phase(status.get("phase") or Phase.PENDING.value)
    if not phase.terminal:
        return None
    decision = status.get("decision") or {}
    return Outcome(
        name=str(obj["metadata"]["name"]),
        phase=phase,
        by=str(decision.get("by", "")),
        via=str(decision.get("via", "")),
        reason=str(decision.get("reason", "")),
        receipt=status.get("receipt"),
    )
