"""The report: one table per N and file system (every row with its target, the median
ratio, each run's own ratio and MET/MISSED), and the summary of issue 16's targets."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: Cold compose / reposync, by file system (issue 16; the work dir keeps round 1's).
COLD_VS_REPOSYNC = {"xfs": 0.35, "tmpfs": 0.6, "dir": 0.6}
#: Cold compose / the verified copy, on tmpfs (issue 16).
COLD_VS_VERIFIED = 1.3
#: First publish compose -> staging on the same file system / rsync.
FIRST_PUBLISH = {"xfs": 0.3, "tmpfs": 0.5, "dir": 0.5}
#: Keys of the reconciler's steps that must complete at N = 100,000 (issue 16).
MUST_COMPLETE = (
    "r.cold_compose",
    "r.publish1_staging",
    "r.publish1_production",
    "r.compose_1pct",
    "r.publish_1pct_staging",
    "r.publish_1pct_production",
    "r.nothing_changed",
)
BIG = 100000


def med(runs: list[dict[str, Any]], key: str, field_: str = "s") -> float | None:
    vals = [r[key][field_] for r in runs if key in r and field_ in r[key]]
    return statistics.median(vals) if vals else None


@dataclass
class Row:
    scenario: str
    ours: str
    base: str
    ratio: float | None
    target: str
    verdict: str
    per_run: list[float] = field(default_factory=list)  # each run's own ratio


def verdict(ok: bool, counts: bool) -> str:
    """MET/MISSED where the target applies; lower case and "(info)" where it does not."""
    word = "MET" if ok else "MISSED"
    return word if counts else f"{word.lower()} (info)"


def rows_for(res: dict[str, Any], tools: dict[str, str | None]) -> list[Row]:
    runs, st, n, fs = res["runs"], res.get("strace", {}), res["n"], res.get("fs", "dir")
    rows: list[Row] = []

    def pair(
        name: str,
        rk: str,
        bk: str,
        limit: float | None,
        missing: str | None = None,
        only_at: int | None = None,
        only_fs: str | None = None,
    ) -> None:
        a, b = med(runs, rk), med(runs, bk)
        target = f"<= {limit:g}" if limit is not None else "-"
        if limit is not None and only_at is not None:
            target += f" (at N={only_at})"
        if limit is not None and only_fs is not None:
            target += f" (on {only_fs})"
        if a is None:
            fails = [r[rk]["failed"] for r in runs if "failed" in r.get(rk, {})]
            why = f"FAILED: {fails[0][:60]}" if fails else "n/a"
            rows.append(Row(name, why, "n/a", None, target, "not measured"))
            return
        if b is None:
            fails = [r[bk]["failed"] for r in runs if "failed" in r.get(bk, {})]
            why = missing or (f"FAILED: {fails[0][:60]}" if fails else "not measured")
            rows.append(Row(name, _fmt(a), why, None, target, "no baseline"))
            return
        ratio = a / b if b else None
        counts = (only_at is None or n == only_at) and (only_fs is None or fs == only_fs)
        v = "-" if limit is None or ratio is None else verdict(ratio <= limit, counts)
        per_run = [
            r[rk]["s"] / r[bk]["s"] for r in runs if "s" in r.get(rk, {}) and r.get(bk, {}).get("s")
        ]
        rows.append(Row(name, _fmt(a), _fmt(b), ratio, target, v, per_run))

    rs, rsync = tools["reposync"], tools["rsync"]
    if not res.get("reposync", True):
        rs = rs or f"skipped at N={n} (--full-baselines-up-to)"
    pair("cold compose vs reposync", "r.cold_compose", "b.reposync_cold", COLD_VS_REPOSYNC[fs], rs)
    pair("cold compose vs verified copy (cp -a + sha256)", "r.cold_compose", "b.cp_a_sha256",
         COLD_VS_VERIFIED, tools["openssl"], only_fs="tmpfs")  # fmt: skip
    pair("cold compose vs cp -a (info)", "r.cold_compose", "b.cp_a", None, tools["cp"])
    pair("first publish compose->staging (same FS)", "r.publish1_staging",
         "b.rsync_publish1_staging", FIRST_PUBLISH[fs], rsync)  # fmt: skip
    if res.get("mode") == "cold":
        return rows
    pair("compose after 1% vs reposync fresh", "r.compose_1pct", "b.reposync_fresh_1pct", 0.15, rs)
    pair("compose after 1% vs reposync --delete", "r.compose_1pct", "b.reposync_delete_1pct",
         1.0, rs)  # fmt: skip
    got = med(runs, "r.compose_1pct", "bytes")
    want = med(runs, "r.compose_1pct", "expected_bytes")
    rsd = med(runs, "b.reposync_delete_1pct", "bytes")
    if got is not None and want:
        rows.append(
            Row(
                "bytes downloaded after 1% (MB)",
                f"{got / 1e6:.2f}",
                f"{want / 1e6:.2f} changed+md"
                + (f"; reposync --delete {rsd / 1e6:.2f}" if rsd is not None else ""),
                got / want,
                "= 1.0",
                verdict(got <= want, True),
            )
        )
    pair("first publish staging->production (same FS)", "r.publish1_production",
         "b.rsync_publish1_production", 0.5, rsync)  # fmt: skip
    if any("r.publish1_xfs" in r for r in runs):
        pair("first publish compose->staging (across FS)", "r.publish1_xfs",
             "b.rsync_publish1_xfs", 1.2, rsync)  # fmt: skip
    else:
        rows.append(Row("first publish (across FS)", "n/a", "n/a", None, "<= 1.2", res["tmpfs"]))
    pair("publish after 1% ->staging", "r.publish_1pct_staging", "b.rsync_1pct_staging", 1.0,
         rsync, only_at=20000)  # fmt: skip
    pair("publish after 1% ->production", "r.publish_1pct_production", "b.rsync_1pct_production",
         1.0, rsync, only_at=20000)  # fmt: skip
    pair("nothing changed, CLI (apply vs rsync x2)", "r.nothing_changed",
         "b.rsync_nothing_changed", 1.0, rsync, only_at=20000)  # fmt: skip
    pair("daemon pass, nothing changed (vs rsync x2)", "r.daemon_nothing",
         "b.rsync_daemon_nothing", 0.2, rsync, only_at=20000)  # fmt: skip
    pair("daemon pass after 1%: stage+promote (vs rsync x2)", "r.daemon_1pct",
         "b.rsync_daemon_1pct", 0.5, rsync, only_at=20000)  # fmt: skip
    rows += _syscall_rows(st, n)
    pair("filelist --root production (vs find walk)", "r.filelist", "b.find_filelist", None)
    for key, label in (("r.cold_compose", "cold compose"), ("r.compose_1pct", "compose after 1%")):
        rss = med(runs, key, "rss_kb")
        if rss is not None:
            mb = rss / 1024
            limit, at = (400, BIG) if n >= BIG else (300, 20000)
            rows.append(Row(f"{label} peak RSS (MB)", f"{mb:.0f}", "-", None,
                            f"< {limit} (at N={at})", verdict(mb < limit, n == at)))  # fmt: skip
    return rows


def _syscall_rows(st: dict[str, Any], n: int) -> list[Row]:
    rows: list[Row] = []
    for label, rk, bk in (
        ("first publish ->staging", "r.publish1_staging", "b.rsync_publish1_staging"),
        ("first publish ->production", "r.publish1_production", "b.rsync_publish1_production"),
        ("publish after 1% ->staging", "r.publish_1pct_staging", "b.rsync_1pct_staging"),
        ("publish after 1% ->production", "r.publish_1pct_production", "b.rsync_1pct_production"),
        ("nothing changed", "r.nothing_changed", "b.rsync_nothing_changed"),
    ):
        a = st.get(rk, {}).get("calls")
        b = st.get(bk, {}).get("calls")
        limit = None if label.startswith("first") else 0.05
        target = "-" if limit is None else f"<= {limit:g} (at N=20000)"
        if a is None or b is None:
            rows.append(Row(f"{label}: metadata syscalls", "n/a", "n/a", None, target,
                            "not measured"))  # fmt: skip
            continue
        ratio = a / b if b else None
        v = "-" if limit is None or ratio is None else verdict(ratio <= limit, n == 20000)
        rows.append(Row(f"{label}: metadata syscalls", str(a), str(b), ratio, target, v))
    return rows


def _fmt(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}"


def print_table(rows: list[Row]) -> str:
    header = ("scenario", "reconciler (median)", "baseline (median)", "ratio", "per run",
              "target", "verdict")  # fmt: skip
    body = [
        (
            r.scenario,
            r.ours,
            r.base,
            f"{r.ratio:.3f}" if r.ratio is not None else "-",
            ", ".join(f"{x:.3f}" for x in r.per_run) if r.per_run else "-",
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    return markdown_table(header, body)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A markdown table, each column as wide as its widest cell."""
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |" for b in body
    ]
    return "\n".join(lines)


def rss_table(res: dict[str, Any]) -> str:
    keys = sorted({k for r in res["runs"] for k in r if k.startswith("r.")})
    parts = []
    for k in keys:
        rss = med(res["runs"], k, "rss_kb")
        parts.append(f"{k[2:]} {rss / 1024:.0f} MB" if rss is not None else f"{k[2:]} n/a")
    return "peak RSS of each reconciler step (median): " + ", ".join(parts)


# -- issue 16's targets -----------------------------------------------------------------


def _find(
    results: list[dict[str, Any]], scenario: str, fs: str | None, n: int | None = None
) -> list[str]:
    """The row ``scenario`` of every result on ``fs`` (None: any) at ``n`` (None: any)."""
    out = []
    for res in results:
        if (fs is not None and res.get("fs", "dir") != fs) or (n is not None and res["n"] != n):
            continue
        for r in res.get("rows", []):
            if r["scenario"] == scenario:
                ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
                runs = ", ".join(f"{x:.3f}" for x in r["per_run"])
                where = f"N={res['n']} on {res.get('fs', 'dir')} ({res.get('mode', 'full')})"
                out.append(f"{where}: {ratio} [{runs or '-'}] {r['verdict']}")
    return out


def cross_n(results: list[dict[str, Any]], big: int, fs: str = "dir") -> dict[str, Any] | None:
    """The nothing-changed CLI pass at ``big`` against N = 2,000 (same invocation and fs)."""
    by_n = {r["n"]: r for r in results if r.get("fs", "dir") == fs and r.get("mode") == "full"}
    if 2000 not in by_n or big not in by_n:
        return None
    a = med(by_n[2000]["runs"], "r.nothing_changed")
    b = med(by_n[big]["runs"], "r.nothing_changed")
    if not a or not b:
        return None
    return {"small": a, "big": b, "n": big, "fs": fs, "ratio": b / a, "target": 1.5,
            "met": b / a <= 1.5}  # fmt: skip


def summary(results: list[dict[str, Any]]) -> str:
    """Every target of issue 16 this bench measures, with its figure(s)."""
    lines = ["issue 16 targets measured by this bench (ratio of medians [each run] verdict):"]

    def item(title: str, found: list[str]) -> None:
        lines.append(f"- {title}: " + ("; ".join(found) if found else "not measured in this run"))

    item(
        "cold compose <= 0.35 of reposync on XFS", _find(results, "cold compose vs reposync", "xfs")
    )
    item("cold compose <= 0.6 of reposync on tmpfs",
         _find(results, "cold compose vs reposync", "tmpfs"))  # fmt: skip
    item("cold compose <= 1.3 of the verified copy on tmpfs",
         _find(results, "cold compose vs verified copy (cp -a + sha256)", "tmpfs"))  # fmt: skip
    item("first publish on XFS <= 0.3 of rsync",
         _find(results, "first publish compose->staging (same FS)", "xfs"))  # fmt: skip
    item("daemon pass, nothing changed, <= 0.2 of rsync x2 at N=20000",
         _find(results, "daemon pass, nothing changed (vs rsync x2)", None, 20000))  # fmt: skip
    item("daemon pass after 1% <= 0.5 of rsync x2 at N=20000",
         _find(results, "daemon pass after 1%: stage+promote (vs rsync x2)", None,
               20000))  # fmt: skip
    big = [r for r in results if r["n"] >= BIG and r.get("mode") == "full"]
    done = []
    for res in big:
        missing = [k[2:] for k in MUST_COMPLETE if med(res["runs"], k) is None]
        done.append(f"N={res['n']} on {res.get('fs', 'dir')}: "
                    + ("MET (all completed)" if not missing else
                       f"MISSED ({', '.join(missing)} did not complete)"))  # fmt: skip
    item("N=100000: compose, first publish, 1% publish and no-op pass complete", done)
    cross = [c for c in (cross_n(results, r["n"], r.get("fs", "dir")) for r in big) if c]
    item("no-op pass at N=100000 <= 1.5 of N=2000",
         [f"on {c['fs']}: {c['big']:.3f}s / {c['small']:.3f}s = {c['ratio']:.2f} "
          f"{'MET' if c['met'] else 'MISSED'}" for c in cross])  # fmt: skip
    rss = []
    for res in big:
        kb = med(res["runs"], "r.cold_compose", "rss_kb")
        if kb is not None:
            rss.append(f"{kb / 1024:.0f} MB {'MET' if kb / 1024 < 400 else 'MISSED'}")
    item("compose peak RSS < 400 MB at N=100000", rss)
    return "\n".join(lines)
