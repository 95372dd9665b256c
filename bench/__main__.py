"""`python -m bench [--quick] [--only latency,burst,scale] [--samples N] [--no-write]`

Starts its own control plane and operator processes in a temporary directory, measures, stops
everything, prints the results and (for full runs) writes them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import report, scenarios
from bench.report import Target
from bench.testbed import REPO, Testbed, started_testbed

PHASES = ("latency", "burst", "scale")
RSS_LIMIT_MIB = 300.0


@dataclass(frozen=True)
class Plan:
    samples: int
    burst: int
    scale: int
    expiring: int
    concurrency: int
    phases: tuple[str, ...]
    mode: str
    profile: Path | None


def parse(argv: list[str]) -> tuple[Plan, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument(
        "--only", default=",".join(PHASES), help=f"comma-separated phases: {', '.join(PHASES)}"
    )
    parser.add_argument("--samples", type=int, help="latency samples per measurement")
    parser.add_argument("--burst", type=int, help="requests in the burst")
    parser.add_argument("--scale", type=int, help="pending requests for the scale phase")
    parser.add_argument("--expiring", type=int, help="requests expiring in the same second")
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each operator process with py-spy (must be on PATH) into this directory",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; do not update docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    phases = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown phase {sorted(unknown)[0]!r}; choose from {PHASES}")
    quick = args.quick
    plan = Plan(
        samples=args.samples or (30 if quick else 200),
        burst=args.burst or (200 if quick else 1000),
        scale=args.scale or (1000 if quick else 10_000),
        expiring=args.expiring or (200 if quick else 1000),
        concurrency=args.concurrency,
        phases=phases,
        mode="quick" if quick else "full",
        profile=args.profile,
    )
    complete = not quick and phases == PHASES and args.samples is None
    return plan, complete and not args.no_write


async def run(plan: Plan) -> list[str]:
    out: list[str] = [report.stamp(plan.mode), "", "Machine:", *report.machine(), ""]
    targets: list[Target] = []
    started = time.monotonic()
    async with started_testbed(plan.profile) as bed:
        raw_ns = await bed.namespace("bench-raw")
        print("baselines: the API server alone", flush=True)
        base = await scenarios.baseline(bed.api, raw_ns, plan.samples)
        out += ["### Baselines (API server alone, no webhook, no operator)", "", *report.header()]
        out += [
            report.row("create → watch event", base.create_watch),
            report.row("create round trip", base.create_rtt),
            report.row("patch → watch event", base.patch_watch),
            report.row("patch round trip", base.patch_rtt),
            "",
        ]
        raw_burst = None
        if "burst" in plan.phases:
            raw_burst = await scenarios.raw_burst(
                bed.api, await bed.namespace("bench-rawburst"), plan.burst, plan.concurrency
            )
        if "latency" in plan.phases or "burst" in plan.phases:
            await _operator_phases(bed, plan, base, raw_burst, out, targets)
        if "scale" in plan.phases:
            await _scale_phase(bed, plan, out, targets)
    out += ["### Targets", "", *report.targets_table(targets), ""]
    out.append(f"Whole run: {time.monotonic() - started:.0f} s.")
    return out


async def _operator_phases(
    bed: Testbed,
    plan: Plan,
    base: scenarios.Baseline,
    raw_burst: scenarios.Burst | None,
    out: list[str],
    targets: list[Target],
) -> None:
    lat_ns = await bed.namespace("bench-latency")
    burst_ns = await bed.namespace("bench-burst")
    print("starting the operator (Slack through the fake server)", flush=True)
    operator = await bed.operator("operator-slack", [lat_ns, burst_ns], slack=True)
    if "latency" in plan.phases:
        print("latency: notifications and decisions, one at a time", flush=True)
        lat = await scenarios.operator_latency(
            bed, lat_ns, bed.interactions["operator-slack"], plan.samples
        )
        webhook_cost = lat.decision_rtt.median - base.patch_rtt.median
        out += ["### The operator's paths (Slack through the fake server)", "", *report.header()]
        out += [
            report.row(
                "create → Slack chat.postMessage received", lat.notify_slack, base.create_watch
            ),
            report.row(
                "create → watch shows status.notifications", lat.notify_status, base.create_watch
            ),
            report.row("create → watch shows Pending", lat.pending, base.create_watch),
            report.row(
                "create round trip (mutating + validating webhook)", lat.create_rtt, base.create_rtt
            ),
            report.row(
                "plain annotation patch round trip (webhooks only)",
                lat.plain_patch_rtt,
                base.patch_rtt,
            ),
            report.row(
                "decision patch round trip (webhooks + SubjectAccessReview + audit)",
                lat.decision_rtt,
                base.patch_rtt,
            ),
            report.row(
                "`kubectl annotate` decision → watch shows Approved",
                lat.decision_kubectl,
                base.patch_watch,
            ),
            report.row(
                "signed Slack click → watch shows Approved", lat.decision_slack, base.patch_watch
            ),
            report.row("signed Slack click → HTTP acknowledgement", lat.slack_ack),
            "",
            f"The webhook's own cost on a decision (median decision patch round trip - median raw "
            f"patch round trip): {webhook_cost * 1000:.1f} ms.",
            "",
        ]
        notify_limit = 2 * base.create_watch.median
        targets.append(
            Target(
                "notification: create → Slack post (median)",
                f"{lat.notify_slack.median * 1000:.1f} ms",
                f"≤ 2 x raw create→watch = {notify_limit * 1000:.1f} ms",
                lat.notify_slack.median <= notify_limit,
            )
        )
        decision_limit = 1.5 * base.patch_watch.median + webhook_cost
        for label, summary in (
            ("decision: `kubectl annotate` → Approved (median)", lat.decision_kubectl),
            ("decision: Slack click → Approved (median)", lat.decision_slack),
        ):
            targets.append(
                Target(
                    label,
                    f"{summary.median * 1000:.1f} ms",
                    f"≤ 1.5 x raw patch→watch + webhook cost = {decision_limit * 1000:.1f} ms",
                    summary.median <= decision_limit,
                )
            )
    if "burst" in plan.phases and raw_burst is not None:
        print(f"burst: {plan.burst} requests back to back", flush=True)
        burst, status_all = await scenarios.operator_burst(
            bed, burst_ns, plan.burst, plan.concurrency, slack=True
        )
        out += [
            f"### Burst: {plan.burst} requests created back to back ({plan.concurrency} in flight)",
            "",
            "| | seconds | per second |",
            "|---|---:|---:|",
            f"| raw creates answered (no operator) | {raw_burst.creates_seconds:.2f} | "
            f"{raw_burst.creates_per_second:.0f} |",
            f"| raw creates all seen on a watch | {raw_burst.all_seen_seconds:.2f} | "
            f"{raw_burst.done_per_second:.0f} |",
            f"| creates answered (through the webhooks) | {burst.creates_seconds:.2f} | "
            f"{burst.creates_per_second:.0f} |",
            f"| all {plan.burst} posted to Slack | {burst.all_seen_seconds:.2f} | "
            f"{burst.done_per_second:.0f} |",
            f"| all {plan.burst} status.notifications written | {status_all:.2f} | "
            f"{plan.burst / status_all:.0f} |",
            "",
            f"Notified throughput is {burst.done_per_second / raw_burst.done_per_second:.2f}x the "
            "raw create→watch throughput.",
            "",
        ]
    operator.kill()


async def _scale_phase(bed: Testbed, plan: Plan, out: list[str], targets: list[Target]) -> None:
    scale_ns = await bed.namespace("bench-scale")
    expiry_ns = await bed.namespace("bench-expiry")
    print(f"scale: {plan.scale} pending requests (console notifier)", flush=True)
    operator = await bed.operator("operator-scale", [scale_ns, expiry_ns], slack=False)
    result = await scenarios.scale(bed, operator, scale_ns, plan.scale, plan.concurrency)
    print(f"expiry: {plan.expiring} requests expiring in the same second", flush=True)
    await scenarios.expiry_storm(
        bed,
        operator,
        expiry_ns,
        plan.expiring,
        plan.concurrency,
        result.fill.creates_per_second,
        result,
    )
    lateness = result.expiry_lateness
    assert lateness is not None
    out += [
        f"### Scale: {plan.scale} pending requests (console notifier)",
        "",
        "| | value |",
        "|---|---:|",
        f"| creating {plan.scale} ({plan.concurrency} in flight), answered | "
        f"{result.fill.creates_seconds:.1f} s ({result.fill.creates_per_second:.0f}/s) |",
        f"| … until every one is Pending and notified | {result.fill.all_seen_seconds:.1f} s "
        f"({result.fill.done_per_second:.0f}/s) |",
        f"| operator RSS with {plan.scale} pending, idle | {result.rss_settled_mib:.0f} MiB |",
        f"| cold start: process start → webhook registered and healthy | "
        f"{result.cold_start_ready_seconds:.1f} s |",
        f"| cold start: process start → every expiry armed | {result.cold_start_seconds:.1f} s |",
        f"| RSS peak during the cold start | {result.rss_cold_peak_mib:.0f} MiB |",
        f"| RSS after the cold start, idle | {result.rss_cold_settled_mib:.0f} MiB |",
        f"| requests expiring in one second (of {result.expiring} created for it) | "
        f"{result.expiring_same_second} |",
        f"| expiresAt → watch shows Expired, median / p99 / max | {lateness.median:.2f} / "
        f"{lateness.p99:.2f} / {lateness.maximum:.2f} s |",
        f"| the shared second → last of them Expired | {result.expiry_all_within:.2f} s |",
        f"| RSS after the expiries ({plan.scale + plan.expiring} objects seen) | "
        f"{result.rss_after_expiry_mib:.0f} MiB |",
        "",
        *[f"Note: {note}" for note in result.notes],
    ]
    rss = max(result.rss_settled_mib, result.rss_cold_peak_mib, result.rss_after_expiry_mib)
    targets += [
        Target(
            f"operator RSS with {plan.scale} pending (highest seen)",
            f"{rss:.0f} MiB",
            f"≤ {RSS_LIMIT_MIB:.0f} MiB",
            rss <= RSS_LIMIT_MIB,
        ),
        Target(
            f"{result.expiring_same_second} requests expiring in the same second all Expired",
            f"{result.expiry_all_within:.2f} s",
            "≤ 2 s",
            result.expiry_all_within <= 2.0,
        ),
    ]
    operator.kill()


def main(argv: list[str] | None = None) -> int:
    plan, write = parse(sys.argv[1:] if argv is None else argv)
    lines = asyncio.run(run(plan))
    print("\n".join(lines))
    if write:
        report.write(REPO / "docs" / "benchmarks.md", lines)
        print("results written to docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
