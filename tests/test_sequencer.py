"""The sequencer on its own, against a fake ledger: id order in, holes filled from the store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from mercurio.model import Notification
from mercurio.sequencer import Sequencer
from tests.helpers import until

pytestmark = pytest.mark.timeout(60)


def note(nid: int, client: str = "c") -> Notification:
    return Notification(nid, f"e{nid}", "s", client, "general", "{}", datetime.now(UTC))


class FakeLedger:
    """A stand-in for Store.committed_after: the committed notifications, and a read count."""

    def __init__(self, ids: list[int]) -> None:
        self.notes = {nid: note(nid) for nid in ids}
        self.reads = 0
        self.fail = 0

    async def fetch(self, after: int, limit: int) -> list[Notification]:
        self.reads += 1
        if self.fail:
            self.fail -= 1
            raise OSError("database went away")
        return [self.notes[nid] for nid in sorted(self.notes) if nid > after][:limit]


Made = tuple[Sequencer, FakeLedger, list[int]]


@pytest.fixture
async def sequenced() -> AsyncIterator[Callable[..., Made]]:
    made: list[Sequencer] = []

    def _make(ids: list[int], *, start: int = 0, page: int = 1000, **options: Any) -> Made:
        ledger = FakeLedger(ids)
        delivered: list[int] = []
        sequencer = Sequencer(
            ledger.fetch,
            lambda notes: delivered.extend(n.id for n in notes),
            debounce=0.005,
            page=page,
            retry=0.01,
            **options,
        )
        sequencer.start(start)
        made.append(sequencer)
        return sequencer, ledger, delivered

    yield _make
    for sequencer in made:
        await sequencer.close()


def settled(sequencer: Sequencer) -> Callable[[], bool]:
    """Nothing held and nothing known to be missing: the fill loop has nothing left to do."""
    return lambda: sequencer.target <= sequencer.watermark and not sequencer.pending


async def test_doorbells_in_id_order_are_delivered_at_once_without_reading(
    sequenced: Any,
) -> None:
    sequencer, ledger, delivered = sequenced([1, 2, 3, 4])
    sequencer.offer([note(1), note(2)])
    assert delivered == [1, 2]
    sequencer.offer([note(3)])
    sequencer.offer([note(4)])
    assert delivered == [1, 2, 3, 4]
    assert sequencer.watermark == 4 and sequencer.pending == 0
    assert ledger.reads == 0


async def test_doorbells_racing_out_of_order_reach_the_hub_in_id_order(sequenced: Any) -> None:
    sequencer, ledger, delivered = sequenced([1, 2, 3, 4, 5, 6])
    sequencer.offer([note(4), note(5)])
    sequencer.offer([note(6)])
    sequencer.offer([note(1), note(2), note(3)])
    assert delivered == [1, 2, 3, 4, 5, 6]
    await until(settled(sequencer), what="the sequencer to settle")
    assert ledger.reads == 0


async def test_a_hole_is_held_then_filled_by_the_store_read(sequenced: Any) -> None:
    sequencer, ledger, delivered = sequenced([1, 2, 3, 4])
    sequencer.offer([note(1)])
    sequencer.offer([note(3), note(4)])  # 2's doorbell was lost
    assert delivered == [1]
    assert sequencer.pending == 2  # 3 and 4 wait for 2 rather than overtake it
    await until(lambda: delivered == [1, 2, 3, 4], what=lambda: f"2 from the store: {delivered}")
    assert ledger.reads == 1
    assert sequencer.pending == 0


async def test_hole_left_by_a_rollback_is_closed_by_one_store_read(sequenced: Any) -> None:
    sequencer, ledger, delivered = sequenced([1, 3, 4])
    sequencer.offer([note(1)])
    sequencer.offer([note(3), note(4)])
    assert delivered == [1]
    await until(lambda: delivered == [1, 3, 4], what=lambda: f"the hole closed: {delivered}")
    await until(settled(sequencer), what="the sequencer to settle")
    assert ledger.reads == 1
    sequencer.offer([note(5)])
    assert delivered == [1, 3, 4, 5]


async def test_rolled_back_ids_are_stepped_over_only_after_a_complete_read(
    sequenced: Any,
) -> None:
    # 3 and 5 never committed. The first read fills its page, so it proves nothing about what
    # lies beyond; only the second, short read shows that nothing up to 5 is still coming.
    sequencer, ledger, delivered = sequenced([1, 2, 4], page=2)
    sequencer.observe(5)
    await until(settled(sequencer), what="the sequencer to settle")
    assert delivered == [1, 2, 4]
    assert sequencer.watermark == 5
    assert ledger.reads == 2
    sequencer.offer([note(6)])
    assert delivered == [1, 2, 4, 6]


async def test_lost_doorbells_are_read_from_the_store_in_order(sequenced: Any) -> None:
    sequencer, _, delivered = sequenced(list(range(1, 11)))
    sequencer.offer([note(10)])
    await until(lambda: delivered == list(range(1, 11)), what=lambda: f"1..10: {delivered}")


async def test_a_burst_of_holes_costs_one_store_read(sequenced: Any) -> None:
    sequencer, ledger, delivered = sequenced(list(range(1, 201)))
    for nid in range(2, 201, 2):
        sequencer.offer([note(nid)])
    await until(lambda: delivered == list(range(1, 201)), what=lambda: f"1..200: {delivered}")
    assert ledger.reads == 1


async def test_resync_after_a_reconnect_reads_what_no_doorbell_announced(
    sequenced: Any,
) -> None:
    sequencer, ledger, delivered = sequenced([1, 2, 3, 4, 5])
    sequencer.offer([note(1), note(2)])
    # 3..5 were published while the link was down: no doorbell, no head, only the store.
    sequencer.resync()
    await until(lambda: delivered == [1, 2, 3, 4, 5], what=lambda: f"3..5 read: {delivered}")
    assert ledger.reads == 1
    sequencer.offer([note(3), note(4), note(5)])  # a late doorbell is not delivered twice
    assert delivered == [1, 2, 3, 4, 5]


async def test_resync_after_a_reconnect_reads_everything_page_by_page(sequenced: Any) -> None:
    sequencer, ledger, delivered = sequenced(list(range(1, 2501)), start=0, page=1000)
    sequencer.resync()
    await until(lambda: delivered == list(range(1, 2501)), what="2500 notifications read")
    assert ledger.reads == 3


async def test_doorbells_past_max_pending_are_still_delivered_from_the_store(
    sequenced: Any,
) -> None:
    sequencer, ledger, delivered = sequenced(list(range(1, 11)), max_pending=3)
    for nid in range(2, 11):  # 1's doorbell was lost; 2..10 pile up behind the hole
        sequencer.offer([note(nid)])
    assert delivered == []
    assert sequencer.pending == 3  # 5..10 were dropped, not held
    assert sequencer.target == 10
    await until(lambda: delivered == list(range(1, 11)), what=lambda: f"1..10: {delivered}")
    assert sequencer.pending == 0
    assert ledger.reads == 1


async def test_head_naming_a_deleted_id_does_not_stall_the_sequence(sequenced: Any) -> None:
    sequencer, _, delivered = sequenced([1, 2])  # 3 was deleted before anyone read it
    sequencer.observe(3)
    await until(settled(sequencer), what="the sequencer to settle")
    assert delivered == [1, 2]
    assert sequencer.watermark == 3
    sequencer.offer([note(4)])
    assert delivered == [1, 2, 4]


async def test_store_failure_is_retried_not_skipped(sequenced: Any) -> None:
    sequencer, ledger, delivered = sequenced([1, 2, 3])
    ledger.fail = 2
    sequencer.offer([note(3)])
    await until(lambda: delivered == [1, 2, 3], what=lambda: f"1..3 after retries: {delivered}")
    assert ledger.reads == 3
