"""Prints the ONNX node conformance pass count at the end of the session."""

from __future__ import annotations

from typing import Any

import pytest

_NODE_TEST = "test_onnx_node.py::test_onnx_node["
_EXCLUDED_PREFIX = "excluded: "  # == test_onnx_node.EXCLUDED_PREFIX


def _skip_reason(report: Any) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        msg = str(lr[2])
        return msg.removeprefix("Skipped: ")
    return str(lr or "")


def node_conformance_summary(stats: dict[str, list[Any]]) -> str | None:
    """One summary line from the terminal reporter's stats (None if no node test ran)."""
    outcome: dict[str, str] = {}
    rank = {"passed": 0, "missing": 1, "excluded": 1, "failed": 2}
    for reports in stats.values():
        for rep in reports:
            nodeid = getattr(rep, "nodeid", "")
            when = getattr(rep, "when", None)
            if _NODE_TEST not in nodeid or when is None:
                continue
            if rep.failed:
                kind = "failed"
            elif rep.skipped:
                reason = _skip_reason(rep)
                kind = "excluded" if reason.startswith(_EXCLUDED_PREFIX) else "missing"
            elif rep.passed and when == "call":
                kind = "passed"
            else:
                continue
            if rank[kind] >= rank.get(outcome.get(nodeid, ""), -1):
                outcome[nodeid] = kind
    if not outcome:
        return None
    n = {k: sum(1 for v in outcome.values() if v == k) for k in rank}
    total = len(outcome)
    line = (
        f"ONNX node conformance: {n['passed']} passed / {total} ORT-passing in-scope "
        f"({100.0 * n['passed'] / total:.1f} %), {n['excluded']} excluded, {n['failed']} failed"
    )
    if n["missing"]:
        line += f", {n['missing']} not in installed onnx"
    return line


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any) -> None:
    line = node_conformance_summary(terminalreporter.stats)
    if line is not None:
        terminalreporter.write_sep("-", "ONNX node conformance")
        terminalreporter.write_line(line)
