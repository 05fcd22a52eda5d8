"""After a crash: a node's session files left `running` keep only the pairs its peer also
kept, so both files agree, and are closed as crashed; and the answer a node gives a peer
that is reconciling."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from controller.data.repair import NOT_RECONCILED, repair_file
from controller.data.sessionfile import (
    awaiting_reconciliation,
    delivered_ids,
    find_session_files,
    read_session,
)
from controller.data.sessionfile import reconcile as reconcile_file
from controller.link.vocabulary import RECONCILE_WAIT_S
from controller.messaging.wire import Refused
from qnode.errors import QnodeError

log = logging.getLogger("qnode.link")

AskPeer = Callable[[str, str], Awaitable[dict]]
"""(peer, session) -> the peer's `session_pairs` reply."""


async def session_pairs(data_dir: Path, node: str, session: str, sender: str | None) -> dict:
    """The pairs this node kept in a session, for its peer (and only its peer) after the
    peer crashed."""
    loop = asyncio.get_running_loop()
    files = find_session_files(data_dir, session, node)
    if not files:
        raise QnodeError(f"no session {session} on node {node}")
    info = await loop.run_in_executor(None, read_session, files[0])
    peers = [n for n in info["request"].get("nodes", []) if n != node]
    if sender not in [f"node-{n}" for n in peers]:
        raise Refused("session_pairs refused: not from that session's peer")
    ids = await loop.run_in_executor(None, delivered_ids, files[0])
    return {"delivered": ids, "status": info["status"]}


async def reconcile_crashed(
    data_dir: Path, node: str, ask_peer: AskPeer, wait_s: float = RECONCILE_WAIT_S
) -> None:
    """Every session file this node left `running` (or closed as crashed, not reconciled):
    ask the peer what it kept (until it answers, or give up after `wait_s`, closing the file
    as crashed, not reconciled, and saying so), keep the intersection, close the file as
    crashed with the reason."""
    loop = asyncio.get_running_loop()
    files = await loop.run_in_executor(None, find_session_files, data_dir, None, node)
    for path in files:
        try:
            info = await loop.run_in_executor(None, read_session, path)
        except (OSError, KeyError) as e:  # killed before its layout was complete: no pairs
            why = f"{node} crashed as the file was being created ({e})"
            try:
                await loop.run_in_executor(None, repair_file, path, why)
                log.warning("%s: %s: %s", node, path.name, why)
            except Exception as failed:
                log.error("%s: %s unreadable and not repaired: %s", node, path.name, failed)
            continue
        if not awaiting_reconciliation(info["status"], info["reason"]):
            continue
        peer = next((n for n in info["request"].get("nodes", []) if n != node), None)
        if peer is None:
            continue
        deadline = time.monotonic() + wait_s
        reply = None
        while reply is None:
            try:
                reply = await ask_peer(peer, info["session"])
            except QnodeError as e:
                if time.monotonic() > deadline:
                    log.error(
                        "%s: session %s not reconciled (%s): its file is closed as crashed, "
                        "to be reconciled at the next start",
                        node,
                        info["session"],
                        e,
                    )
                    why = (
                        f"{NOT_RECONCILED}: {node} crashed; {peer} did not answer in "
                        f"{wait_s:.0f} s ({e}); reconciled when {node} next starts"
                    )
                    await loop.run_in_executor(None, repair_file, path, why)
                    break
                await asyncio.sleep(1.0)
        if reply is None:
            continue
        mine = set(await loop.run_in_executor(None, delivered_ids, path))
        keep = mine & set(reply["delivered"])
        reason = (
            f"{node} crashed; reconciled with {peer}: {len(keep)} pairs kept, "
            f"{len(mine) - len(keep)} discarded"
        )
        await loop.run_in_executor(None, reconcile_file, path, keep, reason)
        log.warning("%s: session %s: %s", node, info["session"], reason)
