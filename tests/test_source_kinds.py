"""The other kinds of local source: folders written by datasets' save_to_disk, compressed files (.gz, .zst) and
plain text (.txt) for continued pretraining. Each must read as its plain counterpart does, and fail in one line."""

import gzip
import json

import pyarrow as pa
import pytest

from conftest import prepare_data, qa_rows, write_rows
from ftlab import compose
from ftlab.data import readers
from ftlab.data.chat import IGNORE
from ftlab.data.sources import Problems, open_source
from ftlab.utils.errors import FtlabError


def prepare(tmp_path, *overrides):
    """FineTune's data stages up to its data module, on the built-in byte tokenizer (no model needed)."""
    return prepare_data(f"cache_dir={tmp_path / 'cache'}", "data.val_size=2", *overrides)


def sizes(ft) -> dict:
    return {split: len(s.items) for split, s in ft.prepared.splits.items()}


def decoded_splits(ft) -> dict:
    """{split: sorted (whole text, supervised text) of its examples}: what the model would see and learn."""
    out = {}
    for split, s in ft.prepared.splits.items():
        pairs = []
        for x in s.items:
            supervised = [t for t, label in zip(x["input_ids"], x["labels"]) if label != IGNORE]
            pairs.append((ft.tokenizer.decode(x["input_ids"]), ft.tokenizer.decode(supervised)))
        out[split] = sorted(pairs)
    return out


def rows_of(tmp_path, *overrides, problems=None) -> dict:
    """The rows the source gives, by split, before any format check: what the text format will be handed."""
    cfg = compose(["model=tiny", f"cache_dir={tmp_path / 'cache'}", *overrides])
    return open_source(cfg.data).read(problems or Problems())


def gz(path, plain) -> str:
    """`plain` (a file) gzipped into `path`."""
    path.write_bytes(gzip.compress(plain.read_bytes()))
    return str(path)


def zst(path, plain) -> str:
    """`plain` (a file) zstd-compressed into `path`, in two frames (as `cat a.zst b.zst` makes)."""
    data, codec = plain.read_bytes(), pa.Codec("zstd")
    half = data.index(b"\n", len(data) // 2) + 1
    path.write_bytes(codec.compress(data[:half], asbytes=True) + codec.compress(data[half:], asbytes=True))
    return str(path)


# ── save_to_disk folders ─────────────────────────────────────────────────────────────────────────────────


def test_a_saved_dataset_is_the_train_split(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_list(qa_rows(12)).save_to_disk(str(folder))
    ft = prepare(tmp_path, f"data.path={folder}")
    assert sizes(ft) == {"train": 9, "validation": 2, "test": 1}  # the demo data group's 10% test split
    plain = prepare(tmp_path / "plain", f"data.path={write_rows(tmp_path / 'd.jsonl', qa_rows(12))}")
    assert decoded_splits(ft) == decoded_splits(plain)  # the same examples, the same validation rows
    learned = sorted(supervised for pairs in decoded_splits(ft).values() for _, supervised in pairs)
    assert learned == sorted(f"{2 * i}<|im_end|>" for i in range(12))
    train = rows_of(tmp_path, f"data.path={folder}")["train"]
    assert train[3] == (f"{folder}[train] row 4", {"question": "What is 3 plus 3?", "answer": "6"})


def test_a_saved_dataset_dict_keeps_its_splits_and_val_path_still_applies(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved"
    DatasetDict(
        {
            "train": Dataset.from_list(qa_rows(10)),
            "dev": Dataset.from_list(qa_rows(13)[10:]),
            "test": Dataset.from_list(qa_rows(4)),
            "unsupervised": Dataset.from_list(qa_rows(7)),  # no split word: left out, as for a Hub dataset
        }
    ).save_to_disk(str(folder))
    ft = prepare(tmp_path, f"data.path={folder}")
    assert sizes(ft) == {"train": 10, "validation": 3, "test": 4}
    validation = decoded_splits(ft)["validation"]
    assert [supervised for _, supervised in validation] == ["20<|im_end|>", "22<|im_end|>", "24<|im_end|>"]
    assert rows_of(tmp_path, f"data.path={folder}")["validation"][0][0] == f"{folder}[dev] row 1"

    val = write_rows(tmp_path / "val.jsonl", qa_rows(5))
    with_val = prepare(tmp_path, f"data.path={folder}", f"data.val_path={val}")
    assert sizes(with_val) == {"train": 10, "validation": 5, "test": 4}


def test_a_saved_dataset_dict_without_a_train_split_is_refused_in_one_line(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved"
    DatasetDict({"validation": Dataset.from_list(qa_rows(3)), "extra": Dataset.from_list(qa_rows(3))}).save_to_disk(
        str(folder)
    )
    with pytest.raises(
        FtlabError,
        match=r"saved: this saved DatasetDict has no train split \(it has: validation, "
        r"extra\); save one named train, or set data.path to one split's folder",
    ) as e:
        prepare(tmp_path, f"data.path={folder}")
    assert "\n" not in str(e.value)
    # the fix it names: one split's folder is a lone Dataset, hence the train split
    assert sizes(prepare(tmp_path, f"data.path={folder / 'extra'}", "data.test_size=0")) == {
        "train": 1,
        "validation": 2,
    }


def test_a_saved_folder_inside_a_scanned_folder_is_named_not_read_as_json(tmp_path):
    from datasets import Dataset

    Dataset.from_list(qa_rows(12)).save_to_disk(str(tmp_path / "data" / "saved"))
    with pytest.raises(
        FtlabError,
        match=r"saved is a folder written by datasets' save_to_disk, not data files; "
        r"set data.path=.*data/saved$",
    ):
        prepare(tmp_path, f"data.path={tmp_path / 'data'}")


def test_the_fingerprint_of_a_saved_folder_follows_its_content(tmp_path):
    from datasets import Dataset
    from datasets.table import InMemoryTable

    def save(rows):  # the same datasets fingerprint every time: only the bytes can tell the versions apart
        Dataset(InMemoryTable.from_pylist(rows), fingerprint="0123456789abcdef").save_to_disk(str(folder))
        return open_source(compose(["model=tiny", f"data.path={folder}"]).data).fingerprint

    folder = tmp_path / "saved"
    rows = qa_rows(12)
    first = save(rows)
    assert open_source(compose(["model=tiny", f"data.path={folder}"]).data).fingerprint == first  # unchanged
    rows[5]["answer"] = "eleven"
    assert save(rows) != first


# ── compressed files ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_a_gzipped_file_gives_the_examples_of_the_plain_one(suffix, tmp_path):
    plain = write_rows(tmp_path / f"d.{suffix}", qa_rows(12))
    packed = gz(tmp_path / f"d.{suffix}.gz", plain)
    expected = decoded_splits(prepare(tmp_path / "plain", f"data.path={plain}"))
    assert decoded_splits(prepare(tmp_path, f"data.path={packed}")) == expected
    assert sum(len(v) for v in expected.values()) == 12


def test_ndjson_gz_and_compressed_val_and_test_paths(tmp_path):
    ndjson = tmp_path / "d.ndjson"
    ndjson.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(10)))
    val = gz(tmp_path / "val.csv.gz", write_rows(tmp_path / "val.csv", qa_rows(3)))
    test = gz(tmp_path / "test.jsonl.gz", write_rows(tmp_path / "test.jsonl", qa_rows(4)))
    packed = gz(tmp_path / "d.ndjson.gz", ndjson)
    ft = prepare(tmp_path, f"data.path={packed}", f"data.val_path={val}", f"data.test_path={test}")
    assert sizes(ft) == {"train": 10, "validation": 3, "test": 4}


def test_a_folder_of_gzipped_files_is_split_by_their_names(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    gz(folder / "train.jsonl.gz", write_rows(tmp_path / "train.jsonl", qa_rows(10)))
    gz(folder / "validation.csv.gz", write_rows(tmp_path / "validation.csv", qa_rows(3)))
    gz(folder / "test-00000-of-00001.json.gz", write_rows(tmp_path / "test.json", qa_rows(4)))
    (folder / "README.txt").write_text("Q&A pairs, doubled numbers.\n")  # notes beside row files are not data
    assert sizes(prepare(tmp_path, f"data.path={folder}")) == {"train": 10, "validation": 3, "test": 4}


def test_a_bad_line_inside_a_gzipped_file_is_named_by_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in qa_rows(10)]
    lines.insert(2, '{"question": "1+1?", "answer": "2"')
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    packed = gz(tmp_path / "d.jsonl.gz", tmp_path / "d.jsonl")
    with pytest.raises(
        FtlabError,
        match=r"d.jsonl.gz:3: not valid JSON \(.*\); each line must be one JSON object; "
        r"or set data.skip_bad_rows=true",
    ):
        prepare(tmp_path, f"data.path={packed}")


@pytest.mark.parametrize("damage", ["not gzip", "truncated"])
def test_a_corrupt_gzip_file_is_named_in_one_line(damage, tmp_path):
    path = tmp_path / "d.jsonl.gz"
    whole = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in qa_rows(10)))
    path.write_bytes(b"plain text, not gzip\n" if damage == "not gzip" else whole[: len(whole) // 2])
    with pytest.raises(
        FtlabError,
        match=r"d.jsonl.gz: not a readable gzip file \(.+\); re-compress it with gzip, "
        r"or use the uncompressed file",
    ) as e:
        prepare(tmp_path, f"data.path={path}")
    assert "\n" not in str(e.value)


def test_zstd_files_read_as_plain_ones_and_a_damaged_one_is_named(tmp_path):
    plain = write_rows(tmp_path / "d.jsonl", qa_rows(12))
    expected = decoded_splits(prepare(tmp_path / "plain", f"data.path={plain}"))
    for suffix in ("zst", "zstd"):
        assert decoded_splits(prepare(tmp_path, f"data.path={zst(tmp_path / f'd.jsonl.{suffix}', plain)}")) == expected
    damaged = tmp_path / "bad.jsonl.zst"
    damaged.write_bytes((tmp_path / "d.jsonl.zst").read_bytes()[:-9])
    with pytest.raises(FtlabError, match=r"bad.jsonl.zst: not a readable zstd file \(.+\); re-compress it with zstd"):
        prepare(tmp_path, f"data.path={damaged}")


def test_without_a_zstd_codec_a_zst_file_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_ZSTD", False)  # a pyarrow built without zstd
    path = zst(tmp_path / "d.jsonl.zst", write_rows(tmp_path / "d.jsonl", qa_rows(12)))
    with pytest.raises(
        FtlabError,
        match=r"d.jsonl.zst: this pyarrow was built without zstd; "
        r"pip install --force-reinstall pyarrow .*zstd -d",
    ):
        prepare(tmp_path, f"data.path={path}")


def test_parquet_is_not_taken_compressed_and_the_message_lists_what_is(tmp_path):
    path = tmp_path / "d.parquet.gz"
    path.write_bytes(gzip.compress(b"x"))
    with pytest.raises(
        FtlabError,
        match=r"unsupported file type '.parquet.gz'; use .jsonl, .ndjson, .json, .csv, "
        r"\.parquet, \.txt \(all but \.parquet also as \.gz or \.zst\)",
    ):
        prepare(tmp_path, f"data.path={path}")


# ── plain text ───────────────────────────────────────────────────────────────────────────────────────────


def test_each_txt_file_is_one_document(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("First document.\n\nIts second paragraph.\n")
    (folder / "b.txt.gz").write_bytes(gzip.compress("Second document, ünïcode.".encode()))
    rows = rows_of(tmp_path, f"data.path={folder}")
    assert rows == {
        "train": [
            (str(folder / "a.txt"), {"text": "First document.\n\nIts second paragraph.\n"}),
            (str(folder / "b.txt.gz"), {"text": "Second document, ünïcode."}),
        ]
    }
    one = rows_of(tmp_path, f"data.path={folder / 'a.txt'}", "data.columns.text=body")
    assert one == {"train": [(str(folder / "a.txt"), {"body": "First document.\n\nIts second paragraph.\n"})]}


def test_with_text_per_line_each_non_empty_line_is_a_document(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes("\ufeffone\r\n\r\ntwo\n   \nthree".encode())  # BOM, Windows line ends, a blank line
    assert rows_of(tmp_path, f"data.path={path}", "data.text_per_line=true") == {
        "train": [(f"{path}:1", {"text": "one"}), (f"{path}:3", {"text": "two"}), (f"{path}:5", {"text": "three"})]
    }


def test_undecodable_and_empty_text_files_are_refused_in_one_line(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_bytes(b"good\nbad \xff\nok\n")
    with pytest.raises(FtlabError, match=r"doc.txt:2: not UTF-8 text \(byte 0xff\); re-save the file as UTF-8"):
        rows_of(tmp_path, f"data.path={path}")
    skipped = Problems(skip=True)  # data.skip_bad_rows=true: per line, only the bad line goes
    rows = rows_of(tmp_path, f"data.path={path}", "data.text_per_line=true", problems=skipped)
    assert [where for where, _ in rows["train"]] == [f"{path}:1", f"{path}:3"]
    assert skipped.reasons == [f"{path}:2: not UTF-8 text (byte 0xff); re-save the file as UTF-8"]

    for blank in ("", " \n\n"):
        (tmp_path / "empty.txt").write_text(blank)
        with pytest.raises(FtlabError, match=r"empty.txt holds no rows; fill it in or remove it"):
            rows_of(tmp_path, f"data.path={tmp_path / 'empty.txt'}")
