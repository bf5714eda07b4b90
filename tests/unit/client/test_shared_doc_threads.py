"""ThreadSafeDoc: two threads editing one pycrdt Doc never mix transactions."""

from __future__ import annotations

import threading

import pycrdt

from rtkit.client.docs import ThreadSafeDoc


def test_two_threads_editing_one_doc_keep_every_edit() -> None:
    doc = ThreadSafeDoc()
    array = doc.get("items", type=pycrdt.Array)
    text = doc.get("text", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    errors: list[BaseException] = []
    n = 500

    def work(tag: str) -> None:
        try:
            for i in range(n):
                with doc.transaction():
                    array.append(f"{tag}{i}")
                    text.insert(len(text), tag)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    items = array.to_py() or []
    assert sorted(items) == sorted([f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)])
    assert sorted(str(text)) == ["a"] * n + ["b"] * n
    # Each transaction committed on its own: one update each, replayable elsewhere.
    assert len(updates) == 2 * n
    replica: pycrdt.Doc = pycrdt.Doc()
    for update in updates:
        replica.apply_update(update)
    assert replica.get("items", type=pycrdt.Array).to_py() == items


def test_the_current_transaction_is_per_thread() -> None:
    doc = ThreadSafeDoc()
    seen: list[object] = []
    with doc.transaction():
        thread = threading.Thread(target=lambda: seen.append(doc._txn))
        thread.start()
        thread.join(5)
        assert doc._txn is not None
    assert seen == [None]
