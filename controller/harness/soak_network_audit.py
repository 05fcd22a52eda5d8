"""The three-node soak's audit: every end-to-end pair the network session files record, against
the three nodes' files, the link layer's session files and the simulator's heralds (pure code
over files, so that it is tested on its own; rules in docs/performance.md, "Three nodes").

- delivered: end-to-end pairs all three nodes (ends and repeater) hold as delivered;
- lost: pairs one node holds as delivered that another discarded or never recorded (once every
  deadline passed), and pairs the repeater reported to the operator that are not in the files;
- discarded: pairs no node delivered; every row of them needs a cause (`uncaused` otherwise);
- double-counted: a pair delivered twice in a file, a link pair used by two delivered
  end-to-end pairs, or two delivered link pairs from one herald of a midpoint;
- phantom: a delivered end-to-end pair without both of its link pairs, a link pair not
  delivered on both of its nodes' link session files, or not backed by a herald of its link's
  midpoint in the simulator's truth (same generation, attempt and outcome).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from controller.data.networkfile import CAUSES, DELIVERED, DISCARDED, REFUSED, read_network_session
from controller.data.sessionfile import DELIVERED as LINK_DELIVERED
from controller.data.sessionfile import find_session_files, read_session
from controller.link.vocabulary import OUTCOMES
from qnode.errors import QnodeError


@dataclass
class NetworkAudit:
    sessions: int = 0
    delivered: int = 0
    discarded: int = 0
    lost: int = 0
    double_counted: int = 0
    phantom: int = 0
    uncaused: int = 0
    """Discarded rows without a cause."""
    link_pairs_checked: int = 0
    """Link pairs of delivered end-to-end pairs traced to a herald of the physics."""
    unclosed: list[str] = field(default_factory=list)
    """Network files never closed (`session: node`): a node killed while in the session."""
    causes: dict[str, int] = field(default_factory=dict)
    """Discarded end-to-end pairs by cause (the repeater's row, else an end's)."""
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.delivered > 0 and not (
            self.lost or self.double_counted or self.phantom or self.uncaused
        )


def read_network_files(data_dir: Path) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """{session: {node: file}} of every network session file, and the unreadable ones."""
    files: dict[str, dict[str, dict]] = {}
    unreadable: list[str] = []
    for path in sorted((Path(data_dir) / "runs").glob("*/*_network.h5")):
        try:
            info = read_network_session(path)
        except (OSError, ValueError) as e:
            unreadable.append(f"{path.name}: unreadable ({e})")
            continue
        files.setdefault(str(info["session"]), {})[str(info["node"])] = info
    return files, unreadable


class LinkFiles:
    """The link layer's session files, read once each: a link pair's rows on its nodes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._cache: dict[str, dict[str, dict]] = {}

    def of(self, session: str) -> dict[str, dict]:
        if session not in self._cache:
            by_node: dict[str, dict] = {}
            try:
                paths = find_session_files(self.data_dir, session)
            except QnodeError:  # not a session id (names.BadName)
                paths = []
            for path in paths:
                try:
                    info = read_session(path)
                except OSError:
                    continue  # its pairs count as missing
                by_node[str(info["node"])] = info
            self._cache[session] = by_node
        return self._cache[session]


def audit_network(
    data_dir: Path,
    truth: dict[str, list[dict]],
    midpoint_of: dict[frozenset[str], str],
    reported: dict[str, int],
) -> NetworkAudit:
    """Every network session's files against each other, the link layer's files and the
    physics' heralds (`truth`: each midpoint's herald records from the simulator;
    `midpoint_of`: a link's two nodes -> its midpoint; `reported`: end-to-end pairs delivered
    per session, as the repeater told the operator)."""
    result = NetworkAudit()
    files, unreadable = read_network_files(data_dir)
    result.problems += unreadable
    heralds = {m: {h["generation"]: h for h in records} for m, records in truth.items()}
    links = LinkFiles(data_dir)
    link_used: Counter = Counter()
    herald_used: Counter = Counter()
    causes: Counter = Counter()
    for session, by_node in sorted(files.items()):
        result.sessions += 1
        request = next(iter(by_node.values()))["request"]
        ends = [str(e) for e in request.get("ends", [])]
        repeater = next((n for n, f in by_node.items() if f["role"] == "repeater"), "")
        if not repeater:  # the repeater's file is missing: its node from the ends' files
            repeater = str(next(iter(by_node.values()))["request"].get("repeater", ""))
        if len(ends) != 2 or not repeater:
            result.problems.append(f"{session}: its files name no ends and repeater")
            continue
        nodes = [ends[0], repeater, ends[1]]
        for node, info in by_node.items():
            if info["status"] == "running":
                result.unclosed.append(f"{session}: {node}")
        rows: dict[str, dict[str, dict]] = {}
        for node in nodes:
            if node not in by_node:
                continue
            seen: Counter = Counter()
            for r in by_node[node]["pairs"]:
                if r["status"] == REFUSED:
                    continue
                pair = r["id"].decode()
                seen[pair] += r["status"] == DELIVERED
                rows.setdefault(pair, {})[node] = r
            twice = sum(n - 1 for n in seen.values() if n > 1)
            if twice:
                result.double_counted += twice
                result.problems.append(f"{session}: {node} delivers {twice} pair(s) twice")
        agreed = 0
        for pair, at in sorted(rows.items()):
            delivered_on = [n for n in nodes if n in at and at[n]["status"] == DELIVERED]
            if delivered_on and len(delivered_on) < len(nodes):
                result.lost += 1
                fates = {n: _fate(at.get(n), n in by_node) for n in nodes}
                result.problems.append(f"{session}: {pair} delivered on some nodes only {fates}")
                continue
            if not delivered_on:
                result.discarded += 1
                uncaused = [n for n, r in at.items() if r["status"] != DISCARDED or not r["cause"]]
                if uncaused:
                    result.uncaused += 1
                    result.problems.append(
                        f"{session}: {pair} discarded without a cause on {uncaused}"
                    )
                else:
                    row = at[repeater] if repeater in at else next(iter(at.values()))
                    causes[CAUSES[int(row["cause"]) - 1]] += 1
                continue
            agreed += 1
            result.delivered += 1
            link_ids = {(r["link_first"].decode(), r["link_second"].decode()) for r in at.values()}
            if len(link_ids) != 1:
                result.phantom += 1
                result.problems.append(f"{session}: {pair}: the nodes name other link pairs")
                continue
            (first, second) = link_ids.pop()
            ok = True
            for link_pair, end in ((first, ends[0]), (second, ends[1])):
                if not link_pair:
                    ok = False
                    result.problems.append(f"{session}: {pair} has no link pair to {end}")
                    continue
                link_used[link_pair] += 1
                why = _link_pair_problem(link_pair, (end, repeater), links, heralds, midpoint_of)
                if isinstance(why, str):
                    ok = False
                    result.problems.append(f"{session}: {pair}: {why}")
                else:
                    herald_used[why] += 1
                    result.link_pairs_checked += 1
            if not ok:
                result.phantom += 1
        if session in reported and reported[session] > agreed:
            short = reported[session] - agreed
            result.lost += short
            result.problems.append(f"{session}: {short} reported pair(s) not in the files")
    for link_pair, n in link_used.items():
        if n > 1:
            result.double_counted += n - 1
            result.problems.append(f"link pair {link_pair} used by {n} end-to-end pairs")
    for (midpoint, generation), n in herald_used.items():
        if n > 1:
            result.double_counted += n - 1
            result.problems.append(f"herald {generation} of {midpoint} delivered {n} times")
    result.causes = dict(causes)
    return result


def _fate(row, has_file: bool) -> str:
    if row is None:
        return "missing" if has_file else "no file"
    if row["status"] == DELIVERED:
        return "delivered"
    cause = CAUSES[int(row["cause"]) - 1] if row["cause"] else "no cause"
    return f"discarded ({cause})"


def _link_pair_problem(
    link_pair: str,
    nodes: tuple[str, str],
    links: LinkFiles,
    heralds: dict[str, dict[int, dict]],
    midpoint_of: dict[frozenset[str], str],
) -> str | tuple[str, int]:
    """What is wrong with a link pair of a delivered end-to-end pair, or its herald's
    (midpoint, generation) when nothing is."""
    session = link_pair.split(":", 1)[0]
    files = links.of(session)
    midpoint = midpoint_of.get(frozenset(nodes))
    if midpoint is None:
        return f"no link between {nodes[0]} and {nodes[1]} in the lab"
    found: dict[str, tuple[int, int, int]] = {}
    for node in nodes:
        info = files.get(node)
        if info is None:
            return f"link pair {link_pair} has no link session file of {node}"
        delivered = [
            r
            for r in info["pairs"]
            if r["id"].decode() == link_pair and r["status"] == LINK_DELIVERED
        ]
        if not delivered:
            return f"link pair {link_pair} is not delivered in {node}'s link session file"
        row = delivered[0]
        sync_of = dict(
            zip(info["heralds"]["shot"].tolist(), info["heralds"]["sync"].tolist(), strict=True)
        )
        generation = sync_of.get(int(row["shot"]))
        if generation is None:
            return f"link pair {link_pair} has no herald row on {node}"
        found[node] = (int(generation), int(row["attempt"]), int(row["outcome"]))
    if len(set(found.values())) != 1:
        return f"link pair {link_pair}: its nodes record other heralds {found}"
    generation, attempt, outcome = found[nodes[0]]
    herald = heralds.get(midpoint, {}).get(generation)
    if herald is None or herald["attempts"] != attempt:
        return f"link pair {link_pair} has no herald of {midpoint} in the physics"
    if herald["outcome"] != OUTCOMES[outcome]:
        return f"link pair {link_pair} has another outcome than {midpoint}'s herald"
    return (midpoint, generation)
