"""The Kubernetes API, as the operator, the SDK, the CLI and the bench reach it.

One place decides where the credentials come from (`load_client_config`) and how a client
speaks TLS to the API server (`ssl_context`, for clients other than the official one).
The official client is synchronous; the operator calls it through `asyncio.to_thread`, so one
slow call never blocks the event loop that also serves the admission webhook.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from opentelemetry import trace

from greenlight.core.model import GROUP, PLURAL, VERSION, Identity

_tracer = trace.get_tracer("greenlight.operator")


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read it again and retry."""


class NotFound(Exception):
    """The object does not exist (any more)."""


def load_client_config(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """The credentials to use: `kubeconfig` when given; else the pod's service account when
    running in a pod; else the default kubeconfig (`$KUBECONFIG` or `~/.kube/config`)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


def ssl_context(api_client: kubernetes.client.ApiClient) -> ssl.SSLContext:
    """The client's TLS settings (server CA, client certificate) as an `ssl.SSLContext`."""
    configuration = api_client.configuration
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def auth_headers(api_client: kubernetes.client.ApiClient) -> dict[str, str]:
    """The `Authorization` header the client sends (a bearer token), if its credentials have one."""
    bearer = api_client.configuration.auth_settings().get("BearerToken")
    token = bearer["value"] if bearer else None  # refreshed from the file in a pod
    return {"Authorization": str(token)} if token else {}


class Kube:
    """Typed, async access to ApprovalRequests, reviews and events."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        self.api_client = api_client or load_client_config()
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.authz = kubernetes.client.AuthorizationV1Api(self.api_client)
        self.authn = kubernetes.client.AuthenticationV1Api(self.api_client)

    async def _call(self, span: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one blocking client call in a thread, as a `k8s <verb> <resource>` span."""
        try:
            with _tracer.start_as_current_span(span, kind=trace.SpanKind.CLIENT):
                return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            if exc.status == 404:
                raise NotFound(str(exc.reason)) from exc
            raise

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self._call(
            "k8s get approvalrequests",
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )
        return obj

    async def pages(
        self, namespace: str | None = None, limit: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every ApprovalRequest (in `namespace`, or in all), `limit` at a time (bounded memory
        for a big cluster)."""
        token: str | None = None
        while True:
            if namespace is None:
                call: Callable[..., Any] = functools.partial(
                    self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL
                )
            else:
                call = functools.partial(
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
                )
            result = await self._call(
                "k8s list approvalrequests", call, limit=limit, _continue=token
            )
            yield list(result.get("items", []))
            token = (result.get("metadata") or {}).get("continue") or None
            if token is None:
                return

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Replace the status, only if the object is still at `resource_version` (else Conflict)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        obj: dict[str, Any] = await self._call(
            "k8s patch approvalrequests/status",
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
        )
        return obj

    async def patch_annotations(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        obj: dict[str, Any] = await self._call(
            "k8s patch approvalrequests",
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": metadata},
        )
        return obj

    async def allowed(self, identity: Identity, verb: str, namespace: str, name: str) -> bool:
        """A SubjectAccessReview: may `identity` use `verb` on this ApprovalRequest?"""
        review = kubernetes.client.V1SubjectAccessReview(
            spec=kubernetes.client.V1SubjectAccessReviewSpec(
                user=identity.user,
                groups=list(identity.groups) or None,
                uid=identity.uid or None,
                extra={k: list(v) for k, v in identity.extra.items()} or None,
                resource_attributes=kubernetes.client.V1ResourceAttributes(
                    group=GROUP, resource=PLURAL, verb=verb, namespace=namespace, name=name
                ),
            )
        )
        result = await self._call(
            "k8s create subjectaccessreviews", self.authz.create_subject_access_review, review
        )
        status = result.status
        return status is not None and bool(status.allowed) and not bool(status.denied)

    async def whoami(self) -> Identity:
        """The identity the API server sees for our own credentials (a SelfSubjectReview)."""
        review = await self._call(
            "k8s create selfsubjectreviews",
            self.authn.create_self_subject_review,
            kubernetes.client.V1SelfSubjectReview(),
        )
        info = review.status.user_info if review.status is not None else None
        if info is None or not info.username:
            raise RuntimeError("the API server did not say who these credentials belong to")
        return Identity(user=str(info.username), groups=tuple(info.groups or ()))
