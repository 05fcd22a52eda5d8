"""The soak's audit: every node's session file against the other's and against the heralds
the simulated physics produced (pure code over files, so that it is tested on its own).

- delivered: pairs both nodes hold as delivered;
- lost: pairs one node holds and the other does not, and pairs the initiator reported to the
  operator that are not in the files;
- double-counted: a pair listed twice in a file, or two delivered pairs from one herald;
- phantom: a delivered pair with no herald of the physics behind it, or with another outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from controller.data.sessionfile import (
    DELIVERED,
    awaiting_reconciliation,
    find_session_files,
    read_session,
)
from controller.link.vocabulary import OUTCOMES

NODES = ("A", "B")
MIDPOINT = "M"


@dataclass
class Audit:
    sessions: int = 0
    delivered: int = 0
    lost: int = 0
    double_counted: int = 0
    phantom: int = 0
    truth_heralds: int = 0
    unsent_heralds: int = 0
    """Heralds of the physics the midpoint never sent (it was killed, its tagger failed, or
    they came after the session ended there): never pairs."""
    unrecorded_heralds: int = 0
    """Heralds the midpoint sent that no node recorded (a node killed before its batch was
    written, a session ending): never delivered, so not lost, but counted."""
    discarded: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def audit(data_dir: Path, truth: list[dict], reported: dict[str, int]) -> Audit:
    """Every node's session files against each other and the physics' heralds (`truth`:
    the simulator's herald records; `reported`: delivered pairs per session, as the
    initiator told the operator)."""
    result = Audit(truth_heralds=len(truth))
    by_generation = {h["generation"]: h for h in truth}
    files: dict[str, dict[str, dict]] = {}
    for path in find_session_files(data_dir):
        try:
            info = read_session(path)
        except OSError as e:  # its pairs count as missing: the other node's become lost
            result.problems.append(f"{path.name}: unreadable ({e})")
            continue
        files.setdefault(str(info["session"]), {})[str(info["node"])] = info
    recorded: set[int] = set()
    used: Counter = Counter()
    discarded: Counter = Counter()
    for session, by_node in sorted(files.items()):
        result.sessions += 1
        missing = [n for n in NODES if n not in by_node]
        for node, info in by_node.items():
            if awaiting_reconciliation(info["status"], info["reason"]):
                result.problems.append(f"{session}: {node}'s file was never closed or reconciled")
        delivered: dict[str, list[str]] = {}
        rows: dict[str, dict] = {}
        sync_of: dict[int, int] = {}
        for node, info in by_node.items():
            heralds = info["heralds"]
            recorded.update(int(s) for s in heralds["sync"])
            sync_of.update(zip(heralds["shot"].tolist(), heralds["sync"].tolist(), strict=True))
            pairs = info["pairs"]
            ids = [r["id"].decode() for r in pairs if r["status"] == DELIVERED]
            delivered[node] = ids
            twice = len(ids) - len(set(ids))
            if twice:
                result.double_counted += twice
                result.problems.append(f"{session}: {node} lists {twice} pair(s) twice")
            for r in pairs:
                if r["status"] == DELIVERED:
                    rows[r["id"].decode()] = r
                else:
                    discarded[reason_kind(r["reason"].decode())] += 1
        sets = [set(ids) for ids in delivered.values()]
        agreed = set.intersection(*sets) if len(sets) == len(NODES) else set()
        one_sided = set.union(*sets) - agreed if sets else set()
        if one_sided:
            result.lost += len(one_sided)
            holders = {n: len(set(delivered[n]) - agreed) for n in sorted(delivered)}
            result.problems.append(
                f"{session}: pairs held by one node only {holders}"
                + (f" (no file from {', '.join(missing)})" if missing else "")
            )
        if session in reported and reported[session] > len(agreed):
            short = reported[session] - len(agreed)
            result.lost += short
            result.problems.append(f"{session}: {short} reported pair(s) not in the files")
        result.delivered += len(agreed)
        for pair_id in sorted(agreed):
            row = rows[pair_id]
            generation = sync_of.get(int(row["shot"]))
            herald = by_generation.get(generation)
            if herald is None or herald["attempts"] != int(row["attempt"]):
                result.phantom += 1
                result.problems.append(f"{session}: {pair_id} has no herald of the physics")
                continue
            if herald["outcome"] != OUTCOMES[int(row["outcome"])]:
                result.phantom += 1
                result.problems.append(f"{session}: {pair_id} has another outcome than its herald")
            used[generation] += 1
    for generation, n in used.items():
        if n > 1:
            result.double_counted += n - 1
            result.problems.append(f"herald {generation} delivered {n} times")
    sent: set[int] = set()
    for path in (Path(data_dir) / "runs").glob(f"*/*_{MIDPOINT}_heralds.h5"):
        try:
            sent.update(int(g) for g in read_session(path)["heralds"]["sync"])
        except OSError as e:
            result.problems.append(f"{path.name}: unreadable ({e})")
    result.unsent_heralds = sum(1 for g in by_generation if g not in sent)
    result.unrecorded_heralds = sum(1 for g in by_generation if g in sent and g not in recorded)
    result.discarded = dict(discarded)
    return result


def reason_kind(reason: str) -> str:
    """Discard reasons without their numbers, so that they count together."""
    return " ".join(w for w in reason.split() if not any(c.isdigit() for c in w))[:90]
