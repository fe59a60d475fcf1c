"""The metadata scan and the per-shard decode pass, on malformed tiny shards, without Ray.

Every bad-input case of the data issue under both policies: ``raise`` names shard, key and
reason; ``skip`` quarantines exactly the bad samples and rows out + quarantined = rows in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jumpray.data.plain_reader import iter_plain
from jumpray.data.quarantine import QuarantineLog
from jumpray.data.scan import HEADERS_PER_SHARD, read_shard_rows, scan_folder
from jumpray.data.schema import ParsedSample, parse_sample
from jumpray.errors import DataError

from ._build import (
    EVIL_MARKER,
    evil_pickle,
    png_bytes,
    sample,
    tiny_images,
    truncate,
    write_index,
    write_tar,
)

IMAGES = tiny_images(8, size=4, seed=5)


def good(i: int, **changes) -> list:
    """Sample s<i>: image i, cls i % 3, json idx i (override any member with changes)."""
    spec = {"image": png_bytes(IMAGES[i]), "cls": i % 3, "meta": {"idx": i, "clean": i % 3}}
    spec.update(changes)
    return sample(f"s{i}", **spec)


def folder_of(tmp_path, shards: list[list], *, index: bool = True, counts=None):
    """Write shards a-00000N.tar; index.json lists ``counts`` (default: the samples written)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    names = [f"a-{n:06d}.tar" for n in range(len(shards))]
    for name, samples in zip(names, shards, strict=True):
        write_tar(tmp_path / name, samples)
    if index:
        write_index(tmp_path, dict(zip(names, counts or [len(s) for s in shards], strict=True)))
    return tmp_path


def _rows_out(scan):
    return scan.rows_in - len(scan.quarantine)


CASES = {
    # name: (shards, expected quarantine [(key, shard, reason fragment)], rows_in)
    "missing cls": ([[good(0), good(1, cls=None), good(2)]], [("s1", 0, "no cls member")], 3),
    "non-integer cls": (
        [[good(0, cls="abc"), good(1, cls="1.5"), good(2)]],
        [("s0", 0, "cls is not an integer: b'abc'"), ("s1", 0, "cls is not an integer: b'1.5'")],
        3,
    ),
    "label out of range": (
        [[good(0, cls=3), good(1, cls=-1), good(2)]],
        [("s0", 0, "label 3 out of range [0, 3)"), ("s1", 0, "label -1 out of range [0, 3)")],
        3,
    ),
    "duplicate idx": (
        [[good(0), good(1)], [good(2, meta={"idx": 1}), good(3)]],
        [("s2", 1, "duplicate idx 1, first in shard a-000000.tar key s1")],
        4,
    ),
    "duplicate key": (
        [[good(0), good(1)], [sample("s1", image=png_bytes(IMAGES[2]), cls=2, meta={"idx": 2})]],
        [("s1", 1, "duplicate key s1, first in shard a-000000.tar key s1")],
        3,
    ),
    "idx or clean label out of range": (
        [[good(0, meta={"idx": 99}), good(1, meta={"idx": 1, "clean": 5}), good(2)]],
        [("s0", 0, "idx 99 outside [0, 3) of index.json"), ("s1", 0, "clean label 5 out of range")],
        3,
    ),
    "missing image member": (
        [[good(0), good(1, image=None), good(2)]],
        [("s1", 0, "no image member")],
        3,
    ),
    "bad json": (
        [[good(0), sample("s1", image=png_bytes(IMAGES[1]), cls=1, extra=[("json", b"{nope")])]],
        [("s1", 0, "json member is not valid JSON")],
        2,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sample_cases_under_both_policies(tmp_path, case):
    shards, expected, rows_in = CASES[case]
    folder = folder_of(tmp_path, shards)
    scan = scan_folder(folder, on_error="skip")
    rows = scan.quarantine.to_table().to_pylist()
    assert [(r["key"], r["shard"]) for r in rows] == [(k, f"a-{s:06d}.tar") for k, s, _ in expected]
    for row, (_, _, reason) in zip(rows, expected, strict=True):
        assert reason in row["reason"]
    assert scan.rows_in == rows_in
    assert _rows_out(scan) + len(rows) == rows_in
    assert sum(len(d) for d in scan.drop.values()) == len(expected)
    key, shard, reason = expected[0]
    with pytest.raises(DataError) as err:
        scan_folder(folder, on_error="raise")
    assert (err.value.shard, err.value.key) == (f"a-{shard:06d}.tar", key)
    assert reason in err.value.reason


def test_truncated_tar_quarantines_the_cut_sample_and_the_lost_ones(tmp_path):
    folder = folder_of(tmp_path, [[good(i) for i in range(4)], [good(4)]])
    # each sample = 3 members x 1024 B; cut inside sample s2's image data (byte 2 * 3072 + 600)
    truncate(folder / "a-000000.tar", 2 * 3072 + 600)
    scan = scan_folder(folder, on_error="skip")
    rows = scan.quarantine.to_table().to_pylist()
    assert [(r["key"], r["idx"]) for r in rows] == [("s2", -1), ("<lost-0>", -1)]  # json was cut
    assert (
        "truncated tar" in rows[0]["reason"]
        and "index.json lists 4 samples, 3 were found" in rows[1]["reason"]
    )
    assert scan.rows_in == 5 and _rows_out(scan) == 3
    with pytest.raises(DataError, match="truncated tar") as err:
        scan_folder(folder, on_error="raise")
    assert (err.value.shard, err.value.key) == ("a-000000.tar", "s2")
    # The decode pass reads the good prefix and stops at the cut without error.
    out = [b for b, _ in read_shard_rows(folder / "a-000000.tar", drop=scan.drop["a-000000.tar"])]
    assert out[0]["idx"].tolist() == [0, 1]


def test_empty_shard_with_and_without_index(tmp_path):
    listed = folder_of(tmp_path / "listed", [[good(0)], []], counts=[1, 2])
    scan = scan_folder(listed, on_error="skip")
    assert [r["key"] for r in scan.quarantine.to_table().to_pylist()] == ["<lost-0>", "<lost-1>"]
    assert scan.rows_in == 3 and _rows_out(scan) == 1
    bare = folder_of(tmp_path / "bare", [[good(0)], []], index=False)
    scan = scan_folder(bare, on_error="skip")
    assert len(scan.quarantine) == 0 and scan.rows_in == 1
    assert scan.shard_issues == ["a-000001.tar: empty shard (no samples)"]
    (bare / "a-000002.tar").write_bytes(b"")  # a zero-byte file is empty too
    assert len(scan_folder(bare, on_error="skip").shard_issues) == 2
    for folder in (listed, bare):
        with pytest.raises(DataError, match="empty shard") as err:
            scan_folder(folder, on_error="raise")
        assert err.value.shard == "a-000001.tar"


def test_missing_shard_file_is_lost_and_no_index_assigns_idx(tmp_path):
    folder = folder_of(tmp_path / "m", [[good(0)], [good(1), good(2)]])
    (folder / "a-000001.tar").unlink()
    scan = scan_folder(folder, on_error="skip")
    assert [(r["key"], r["shard"]) for r in scan.quarantine.to_table().to_pylist()] == [
        ("<lost-0>", "a-000001.tar"),
        ("<lost-1>", "a-000001.tar"),
    ]
    # Without index.json and json members: idx in (shard, position) order, C assumed.
    bare = folder_of(
        tmp_path / "b",
        [
            [sample(f"k{i}", image=png_bytes(IMAGES[i]), cls=i) for i in (0, 1)],
            [sample("k2", image=png_bytes(IMAGES[2]), cls=2)],
        ],
        index=False,
    )
    scan = scan_folder(bare, on_error="raise")
    assert scan.idx_assigned and scan.idx_base == {"a-000000.tar": 0, "a-000001.tar": 2}
    assert scan.num_classes == 3 and scan.num_samples == 3 and not scan.has_clean_labels
    assert any("idx assigned" in a for a in scan.assumptions)
    [batch] = [b for b, _ in read_shard_rows(bare / "a-000001.tar", idx_base=2)]
    assert (batch["key"].tolist(), batch["idx"].tolist(), batch["clean_label"].tolist()) == (
        ["k2"],
        [2],
        [-1],
    )


def test_decode_pass_undecodable_and_wrong_size_images(tmp_path):
    big = png_bytes(np.zeros((6, 6), np.uint8))
    folder = folder_of(
        tmp_path, [[good(0), good(1, image=b"\x89PNG broken"), good(2, image=big), good(3)]]
    )
    scan = scan_folder(folder, on_error="skip")  # images are not decoded by the scan
    assert len(scan.quarantine) == 0
    out = list(
        read_shard_rows(folder / "a-000000.tar", on_error="skip", expected_hw=(4, 4), batch_rows=2)
    )
    rows = [b for b, _ in out]
    bad = [q for _, q in out for q in q]
    assert [r["idx"].tolist() for r in rows] == [[0, 3]]
    assert [(k, s, i) for k, s, i, _ in bad] == [
        ("s1", "a-000000.tar", 1),
        ("s2", "a-000000.tar", 2),
    ]
    assert (
        "does not decode" in bad[0][3]
        and "image is 6x6 but the folder's images are 4x4" in bad[1][3]
    )
    np.testing.assert_array_equal(rows[0]["image"][1, 0], IMAGES[3])
    with pytest.raises(DataError, match="does not decode") as err:
        list(read_shard_rows(folder / "a-000000.tar", on_error="raise"))
    assert (err.value.shard, err.value.key) == ("a-000000.tar", "s1")
    # With a target size every image is resized instead, so nothing is rejected for its size.
    out = list(read_shard_rows(folder / "a-000000.tar", on_error="skip", image_size=5, channels=3))
    assert out[0][0]["image"].shape == (3, 3, 5, 5)


def test_malicious_pickle_member_is_never_loaded(tmp_path):
    target = tmp_path / EVIL_MARKER
    evil = evil_pickle(target)
    folder = folder_of(
        tmp_path / "ds",
        [[good(0, extra=[("pyd", evil), ("pickle", evil)]), good(1, extra=[("evil.pth", evil)])]],
    )
    for policy in ("raise", "skip"):
        scan = scan_folder(folder, on_error=policy)
        assert len(scan.quarantine) == 0 and scan.rows_in == 2
        [(batch, bad)] = list(read_shard_rows(folder / "a-000000.tar", on_error=policy))
        assert batch["idx"].tolist() == [0, 1] and bad == []
        np.testing.assert_array_equal(batch["image"][0, 0], IMAGES[0])
    assert not target.exists()
    assert json.loads(json.dumps(sorted(p.name for p in tmp_path.iterdir()))) == ["ds"]


def test_one_sample_parser_and_its_reasons():
    png = png_bytes(IMAGES[0])
    assert parse_sample(
        {"__key__": "k", "png": png, "cls": b" 2 ", "json": b'{"idx": 5, "clean": 1}'}
    ) == ParsedSample(2, 5, 1, "png", png, None)
    # The first image member in member order; a member present but not read has no bytes.
    assert parse_sample({"webp": None, "png": png, "cls": b"0"}).image_format == "webp"
    meta = b'{"idx": 4, "clean": 1}'
    # A bad sample keeps the idx its json carries (its quarantine row names it).
    assert parse_sample({"cls": b"1", "json": meta}) == ParsedSample(
        -1, 4, -1, None, None, "no image member (one of jpg, jpeg, png, webp)"
    )
    assert parse_sample({"png": png, "json": meta}) == ParsedSample(
        -1, 4, -1, "png", png, "no cls member (the label)"
    )
    assert parse_sample({"png": png, "cls": b"x", "json": meta}) == ParsedSample(
        -1, 4, -1, "png", png, "cls is not an integer: b'x'"
    )
    bad_json = parse_sample({"png": png, "cls": b"1", "json": b"[1]"})
    assert (bad_json.given_label, bad_json.idx, bad_json.problem) == (
        1,
        -1,
        "json member is not an object",
    )


def test_every_reader_gives_a_bad_sample_the_same_reason(tmp_path):
    folder = folder_of(tmp_path, [[good(0), good(1, cls="x"), good(2, image=None)]], index=False)
    scan = scan_folder(folder, on_error="skip")
    log = QuarantineLog("skip")
    list(iter_plain(folder, on_error="skip", quarantine=log))
    assert [r[3] for r in log.rows] == [r[3] for r in scan.quarantine.rows]
    assert [r[3] for r in log.rows] == [
        "cls is not an integer: b'x'",
        "no image member (one of jpg, jpeg, png, webp)",
    ]


def test_each_tar_is_opened_once_before_the_decode_pass(tmp_path, monkeypatch):
    from jumpray.data import shards, tario

    folder = folder_of(
        tmp_path,
        [
            [good(0), good(1, cls=None), good(2)],
            [good(3), good(4, image=b"junk"), good(5, meta={"idx": 0})],
        ],
    )
    opened = []
    real_iter = tario.TarSampleReader.__iter__

    def counting_iter(self):
        opened.append(Path(self.path).name)
        return real_iter(self)

    monkeypatch.setattr(tario.TarSampleReader, "__iter__", counting_iter)
    scan = scan_folder(folder, on_error="skip")
    assert sorted(opened) == ["a-000000.tar", "a-000001.tar"]
    # The image sizes come from the headers the scan read: no tar is opened again.
    probe = shards._probe(scan)
    assert len(opened) == 2
    # s1 (no cls) has no header; s5 (a duplicate idx, found by the folder plan) is left out.
    assert list(scan.shards[0].image_headers) == [0, 2]
    assert probe.tried == 4 and probe.shapes == [(1, 4, 4)] * 3
    assert probe.first_error.startswith("a-000001.tar/s4: image does not decode")


def test_the_scan_reads_a_few_image_headers_per_tar(tmp_path):
    samples = [
        sample(f"k{i}", image=png_bytes(IMAGES[i % 8]), cls=i % 3, meta={"idx": i})
        for i in range(HEADERS_PER_SHARD + 5)
    ]
    folder = folder_of(tmp_path, [samples], counts=[len(samples)])
    scan = scan_folder(folder, on_error="raise")
    [shard] = scan.shards
    assert list(shard.image_headers) == list(range(HEADERS_PER_SHARD))
    assert set(shard.image_headers.values()) == {(1, 4, 4)}
