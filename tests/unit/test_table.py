from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from qroute.config import TableSettings
from qroute.errors import TableError
from qroute.table import iter_examples, read_table, row_id, scan_table


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.csv", "text,label\n코스닥 지수 알려줘,금융\n서귀포 맛집 알려줘,장소\n"),
        ("t.tsv", "text\tlabel\n코스닥 지수 알려줘\t금융\n서귀포 맛집 알려줘\t장소\n"),
        (
            "t.jsonl",
            '{"text": "코스닥 지수 알려줘", "label": "금융"}\n\n'
            '{"text": "서귀포 맛집 알려줘", "label": "장소"}\n',
        ),
    ],
)
def test_each_format_reads_the_same_examples(tmp_path: Path, name: str, content: str) -> None:
    examples = read_table(_write(tmp_path / name, content))
    assert [(e.text, e.label) for e in examples] == [
        ("코스닥 지수 알려줘", "금융"),
        ("서귀포 맛집 알려줘", "장소"),
    ]
    assert examples[0].row_id == row_id("코스닥 지수 알려줘", "금융")


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["코스닥 지수 알려줘"], "label": ["금융"]}), path)
    assert [(e.text, e.label) for e in read_table(path)] == [("코스닥 지수 알려줘", "금융")]


def test_row_ids_are_stable_and_ignore_spacing_and_unicode_form() -> None:
    assert row_id("  코스닥   지수 ", "금융") == row_id(
        unicodedata.normalize("NFD", "코스닥 지수"), "금융"
    )
    assert row_id("코스닥 지수", "금융") != row_id("코스닥 지수", "뉴스")
    # Pinned: a changed derivation would re-id every point of every existing index.
    assert row_id("코스닥 지수", "금융") == "f479f0a3-8de6-516e-b8ac-0ced582e9b4a"


def test_configured_column_names_and_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffquery,domain\n코스닥 지수 알려줘,금융\n".encode())
    examples = read_table(path, TableSettings(text_column="query", label_column="domain"))
    assert [(e.text, e.label) for e in examples] == [("코스닥 지수 알려줘", "금융")]


def test_every_bad_row_is_named_with_file_row_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.csv",
        "text,label\n코스닥 지수 알려줘,금융\n,장소\n날씨 알려줘,  \n코스닥 지수 알려줘,뉴스\n",
    )
    with pytest.raises(TableError) as info:
        read_table(path)
    assert info.value.problems == [
        f"{path}:3: text: empty [empty_text: error]",
        f"{path}:4: label: empty [missing_label: error]",
        f"{path}:5: label: text is also labelled '금융' at row 2 [conflicting_labels: error]",
    ]


def test_jsonl_problems(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        "\n".join(
            [
                json.dumps({"text": "ok", "label": "a"}),
                "{not json",
                json.dumps(["a", "list"]),
                json.dumps({"text": 3, "label": "a"}),
                json.dumps({"label": "a"}),
            ]
        ),
    )
    with pytest.raises(TableError) as info:
        read_table(path)
    assert [p.split(": ", 1)[0] for p in info.value.problems] == [
        f"{path}:{n}" for n in (2, 3, 4, 5)
    ]
    assert "text: column is missing" in info.value.problems[-1]
    assert "expected a string, got int" in info.value.problems[-2]


def test_repeated_row_is_kept_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "text,label\n비 와?,날씨\n비  와?,날씨\n")
    assert len(read_table(path)) == 1


def test_missing_file_unknown_format_and_empty_table(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no such file"):
        read_table(tmp_path / "none.csv")
    with pytest.raises(TableError, match="unsupported file type"):
        read_table(_write(tmp_path / "t.xlsx", ""))
    with pytest.raises(TableError, match="no usable rows"):
        read_table(_write(tmp_path / "t.csv", "text,label\n"))


def test_korean_excel_encodings_are_read(tmp_path: Path) -> None:
    content = "text,label\n코스닥 지수 알려줘,금융\n서귀포 맛집,장소\n"
    for encoding in ("cp949", "euc-kr", "utf-8-sig", "utf-8"):
        path = tmp_path / f"{encoding}.csv"
        path.write_bytes(content.encode(encoding))
        assert [e.text for e in read_table(path)] == ["코스닥 지수 알려줘", "서귀포 맛집"], encoding


def test_a_forced_encoding_that_does_not_fit_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\nabc,x\n" + "코스닥,금융\n".encode("cp949"))
    with pytest.raises(TableError, match=rf"{path}:3: cannot decode the row as utf-8"):
        read_table(path, TableSettings(encoding="utf-8"))
    assert [e.text for e in read_table(path, TableSettings(encoding="cp949"))] == ["abc", "코스닥"]


def test_extra_columns_ride_along(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "text,label,source,lang\n코스닥 지수,금융,crm,ko\n")
    [example] = read_table(path)
    assert example.extra == {"source": "crm", "lang": "ko"}


ROWS = (
    "text,label\n코스닥 지수,금융\n,금융\n환율,\n{long},금융\n"
    "코스닥 지수,금융\n코스닥  지수,뉴스\n혼자,희귀\n"
)


@pytest.mark.parametrize(
    ("kind", "setting", "row"),
    [
        ("empty_text", "on_empty_text", 3),
        ("missing_label", "on_missing_label", 4),
        ("too_long", "on_too_long", 5),
        ("duplicate", "on_duplicate", 6),
        ("conflicting_labels", "on_conflicting_labels", 7),
    ],
)
@pytest.mark.parametrize("policy", ["error", "skip", "warn"])
def test_each_problem_follows_its_policy(
    tmp_path: Path, kind: str, setting: str, row: int, policy: str
) -> None:
    path = _write(tmp_path / "t.csv", ROWS.format(long="가" * 30))
    lenient = {
        name: "warn"
        for name in (
            "on_empty_text",
            "on_missing_label",
            "on_too_long",
            "on_duplicate",
            "on_conflicting_labels",
            "on_rare_label",
        )
    }
    settings = TableSettings(max_text_chars=20, **{**lenient, setting: policy})
    report = scan_table(path, settings)
    [problem] = [p for p in report.problems if p.kind == kind]
    assert problem.where == f"{path}:{row}" and problem.policy == policy
    assert report.totals()[kind] == 1
    assert f"{kind} 1 ({policy})" in report.render()
    if policy == "error":
        with pytest.raises(TableError, match=f"{path}:{row}: "):
            report.raise_for_errors()
        return
    report.raise_for_errors()
    lines = [e.line for chunk in iter_examples(report, settings) for e in chunk]
    assert (row in lines) == (
        policy == "warn" and kind in ("too_long", "duplicate", "conflicting_labels")
    )


@pytest.mark.parametrize("policy", ["error", "skip", "warn"])
def test_labels_with_too_few_examples(tmp_path: Path, policy: str) -> None:
    path = _write(tmp_path / "t.csv", "text,label\n코스닥,금융\n환율,금융\n혼자,희귀\n")
    settings = TableSettings(min_examples=2, on_rare_label=policy)
    report = scan_table(path, settings)
    [problem] = report.problems
    assert problem.kind == "rare_label" and "'희귀' has 1 example(s) (minimum 2)" in problem.detail
    if policy == "error":
        with pytest.raises(TableError):
            report.raise_for_errors()
        return
    labels = {e.label for chunk in iter_examples(report, settings) for e in chunk}
    assert labels == ({"금융", "희귀"} if policy == "warn" else {"금융"})


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.csv", "text,label,text\n코스닥 지수,금융,주식\n"),
        ("t.tsv", "label\ttext\tlabel\n금융\t코스닥 지수\t주식\n"),
    ],
)
def test_a_repeated_column_name_is_an_error_naming_it(
    tmp_path: Path, name: str, content: str
) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(TableError, match=rf"{path}:1: the header names column\(s\) '(text|label)'"):
        scan_table(path)


def test_a_repeated_json_key_is_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.jsonl",
        '{"text": "코스닥 지수", "label": "금융", "text": "주식"}\n'
        '{"text": "비 와?", "label": "날씨"}\n',
    )
    report = scan_table(path)
    assert [(p.where, p.kind) for p in report.problems] == [(f"{path}:1", "unreadable")]
    assert "'text' twice" in report.problems[0].detail


def test_a_parquet_file_with_a_repeated_column_is_an_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    columns = [["코스닥"], ["금융"], ["주식"]]
    pq.write_table(pa.table(columns, names=["text", "label", "text"]), path)
    with pytest.raises(TableError, match=r"column\(s\) 'text' more than once"):
        scan_table(path)


def test_a_quote_left_open_is_named_where_it_opens(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.csv",
        'text,label\n코스닥 지수,금융\n"영화 추천해줘,영화\n비 와?,날씨\n맛집 알려줘,장소\n',
    )
    report = scan_table(path)
    [problem] = report.errors
    assert problem.where == f"{path}:3"
    assert "quoted field opens on this line and is never closed" in problem.detail
    assert "lines 3-5" in problem.detail


def test_a_multi_line_quoted_field_is_numbered_by_its_first_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", 'text,label\n"코스닥\n지수",금융\n비 와?,\n')
    report = scan_table(path)
    assert [p.where for p in report.problems] == [f"{path}:4"]
    ok = _write(tmp_path / "ok.csv", 'text,label\n"코스닥\n지수",금융')  # no final newline
    assert [(e.text, e.line) for e in read_table(ok)] == [("코스닥 지수", 2)]


def test_fields_beyond_the_csv_modules_limit_are_read_up_to_max_text_chars(
    tmp_path: Path,
) -> None:
    long_text = "가" * 200_000
    path = _write(tmp_path / "t.csv", f"text,label\n{long_text},금융\n비 와?,날씨\n")
    settings = TableSettings(max_text_chars=300_000)
    assert [len(e.text) for e in read_table(path, settings)] == [200_000, 4]
    huge = _write(tmp_path / "huge.csv", f"text,label\n{'가' * 400_000},금융\n비 와?,날씨\n")
    report = scan_table(huge, settings)
    assert [p.where for p in report.errors] == [f"{huge}:2"]
    assert "table.max_text_chars" in report.errors[0].detail
    assert report.labels == {"날씨": 1}  # the rows after it are still read


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"not parquet at all" * 10)
    with pytest.raises(TableError, match=rf"{path}: cannot read the file as Parquet"):
        scan_table(path)


def test_the_report_counts_the_rows_left_out_by_kind(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.csv", "text,label\n비 와?,날씨\n비 와?,날씨\n맑아?,날씨\n코스닥,금융\n,금융\n"
    )
    settings = TableSettings(on_empty_text="skip", min_examples=2, on_rare_label="skip")
    report = scan_table(path, settings)
    assert report.dropped() == {"duplicate": 1, "empty_text": 1, "rare_label": 1}
    note = report.dropped_note()
    assert note is not None and note.startswith(f"{path}: 3 of 5 rows left out: 1 duplicate")
    clean = _write(tmp_path / "ok.csv", "text,label\n비 와?,날씨\n")
    assert scan_table(clean).dropped_note() is None
