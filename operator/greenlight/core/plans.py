"""Plans Greenlight reads itself: `pulumi preview --json` and `terraform show -json` output
turned into counts and the resources an action destroys (`status.plan`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanReading:
    """Greenlight's own reading of a machine-readable plan (`status.plan`)."""

    format: str  # "pulumi-preview-json" | "terraform-plan-json"
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    replaces: int = 0
    destroyed: tuple[str, ...] = ()  # resources deleted or replaced, bounded
    resource_types: tuple[str, ...] = ()  # distinct types, bounded
    truncated: bool = False  # a list above was cut at its bound
