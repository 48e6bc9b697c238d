from pathlib import Path

from edgegw.gateway.durable_queue import ROW_OVERHEAD, DurableQueue


def test_messages_and_sequences_survive_reopen(tmp_path: Path):
    q = DurableQueue(tmp_path / "q.sqlite3", 10**9)
    assert [q.next_seq("mqtt/a") for _ in range(3)] == [1, 2, 3]
    for i in range(3):
        q.append("mqtt", "t/a", f"m{i}".encode())
    q.commit()
    q.ack([q.after("mqtt", 0, 1)[0][0]])
    q.commit()
    q.db.close()  # no close(): as after a crash
    q2 = DurableQueue(tmp_path / "q.sqlite3", 10**9)
    assert [b for _, _, b in q2.after("mqtt", 0, 10)] == [b"m1", b"m2"]
    assert q2.next_seq("mqtt/a") == 4
    assert q2.depth == 2


def test_ids_are_never_reused_after_the_queue_empties(tmp_path: Path):
    q = DurableQueue(tmp_path / "q.sqlite3", 10**9)
    q.append("mqtt", "t", b"x")
    q.commit()
    ((first, _, _),) = q.after("mqtt", 0, 10)
    q.ack([first])
    q.commit()
    q.append("mqtt", "t", b"y")
    q.commit()
    assert q.after("mqtt", first, 10)[0][0] > first


def test_full_queue_drops_oldest_and_counts(tmp_path: Path):
    row = 100 + len("t") + ROW_OVERHEAD  # what one message costs on disk
    q = DurableQueue(tmp_path / "q.sqlite3", max_bytes=10 * row)
    for i in range(30):
        q.append("mqtt", "t", bytes([65 + i % 26]) * 100)
        q.commit()
    assert q.bytes <= 10 * row
    assert q.dropped == 20
    kept = q.after("mqtt", 0, 100)
    assert len(kept) == 10 and kept[0][2][:1] == bytes([65 + 20 % 26])


def test_corrupt_file_is_moved_aside(tmp_path: Path):
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    q = DurableQueue(path, 10**9)
    assert q.depth == 0
    aside = list(tmp_path.glob("q.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    q.append("mqtt", "t", b"x")
    q.commit()
    assert q.depth == 1


def test_damaged_file_keeps_its_sequence_numbers_when_they_are_readable(tmp_path: Path):
    path = tmp_path / "q.sqlite3"
    q = DurableQueue(path, 10**9)
    assert q.next_seq("mqtt/a") == 1
    for i in range(300):
        q.next_seq("mqtt/a")
        q.append("mqtt", "t", bytes([i % 251]) * 4000)
    q.commit()
    q.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    q.db.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    # the sequences table's root page is near the start; damage message pages in the middle
    middle = (len(raw) // page // 2) * page
    raw[middle : middle + 3 * page] = b"\xff" * (3 * page)
    path.write_bytes(bytes(raw))
    q = DurableQueue(path, 10**9)
    assert list(tmp_path.glob("q.sqlite3.corrupt-*"))
    assert q.depth == 0
    assert q.next_seq("mqtt/a") == 302  # continues; never reuses a seq the damaged file had issued
