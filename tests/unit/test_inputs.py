"""Streaming JSONL validation: exact messages for bad inputs, limits, fuzzing, definition hash."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.inputs import (
    ENDPOINTS,
    MISTRAL_ENDPOINTS,
    InputLimits,
    InputSummary,
    definition_hash,
    estimate_tokens,
    output_cap,
    validate_input,
    validate_inputs,
)
from orchestrator.model import JobSpec

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
CHAT = "/v1/chat/completions"


def chat(custom_id: str, content: str = "hi") -> dict[str, object]:
    """One chat request line as a dict."""
    return {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": content}]}}


def jsonl(*requests: object) -> bytes:
    """JSON lines, each ending with a newline."""
    return b"".join(json.dumps(r).encode() + b"\n" for r in requests)


def write(tmp_path: Path, data: bytes, name: str = "in.jsonl") -> Path:
    """Write ``data`` to ``tmp_path/name``."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


def problems_of(path: Path | list[Path], endpoint: str = CHAT, **limits: int) -> InputError:
    """The InputError that validating ``path`` raises."""
    paths = path if isinstance(path, list) else [path]
    with pytest.raises(InputError) as caught:
        validate_inputs(paths, endpoint=endpoint, limits=InputLimits(**limits))
    return caught.value


BOM_FIX = "save the file as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)"
EMPTY_LINE = "empty line: only a single final newline may end the file; remove it"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "bom.jsonl",
            [
                f"{{f}}:1: starts with a UTF-8 byte order mark (BOM), which JSON Lines does not "
                f"allow: {BOM_FIX}"
            ],
        ),
        ("blank-middle.jsonl", [f"{{f}}:2: {EMPTY_LINE}"]),
        ("crlf-blank.jsonl", [f"{{f}}:2: {EMPTY_LINE}"]),
        (
            "invalid-utf8.jsonl",
            [
                "{f}:2: not valid UTF-8: byte 0xe9 at byte offset 73 of the line; batch inputs "
                "must be UTF-8"
            ],
        ),
        ("not-json.jsonl", ["{f}:1: not valid JSON: Expecting ',' delimiter at column 77"]),
        ("not-object.jsonl", ["{f}:1: a request must be a JSON object, got an array"]),
        ("nan.jsonl", ["{f}:1: not valid JSON: NaN is not valid JSON (only finite numbers are)"]),
        (
            "custom-id.jsonl",
            [
                "{f}:1: missing (custom_id)",
                "{f}:2: empty string (custom_id)",
                "{f}:3: must be a non-empty string, got 7 (custom_id)",
            ],
        ),
        ("duplicate-ids.jsonl", ["{f}:3: duplicate 'a', first used on line 1 (custom_id)"]),
        (
            "body.jsonl",
            [
                "{f}:1: missing (body)",
                "{f}:2: must be an object, got 'hello' (body)",
                "{f}:3: missing: required by /v1/chat/completions (body.messages)",
                "{f}:4: must not be an empty list (body.messages)",
                "{f}:5: must be a non-empty list, got 'hi' (body.messages)",
                "{f}:6: must be an object, got 'hi' (body.messages[0])",
            ],
        ),
        ("empty.jsonl", ["{f}: input file is empty (0 bytes): a batch needs a request"]),
        (
            "only-newlines.jsonl",
            [
                "{f}: holds no requests, only empty lines",
                f"{{f}}:1: {EMPTY_LINE}",
                f"{{f}}:2: {EMPTY_LINE}",
            ],
        ),
    ],
)
def test_bad_input_files_give_exact_messages(name: str, expected: list[str]) -> None:
    """Each file in tests/data/bad fails with file:line: what (field) entries, in line order."""
    path = BAD / name
    error = problems_of(path)
    assert list(error.problems) == [e.format(f=path) for e in expected]
    noun = "problem" if len(expected) == 1 else "problems"
    assert error.summary == (
        f"invalid batch input for {CHAT} in {path}: {len(expected)} {noun}; "
        "the job is rejected and nothing was uploaded"
    )


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        ("/v1/embeddings", {"model": "m"}, "missing: required by /v1/embeddings (body.input)"),
        ("/v1/embeddings", {"input": []}, "must not be empty, got an array (body.input)"),
        ("/v1/embeddings", {"input": None}, "must not be empty, got null (body.input)"),
        (
            "/v1/fim/completions",
            {"suffix": "x"},
            "missing: required by /v1/fim/completions (body.prompt)",
        ),
        ("/v1/moderations", {}, "missing: required by /v1/moderations (body.input)"),
        ("/v1/classifications", {"input": ""}, "must not be empty, got '' (body.input)"),
        (
            "/v1/chat/moderations",
            {"model": "m"},
            "missing: /v1/chat/moderations requires input or messages (body.input, body.messages)",
        ),
        (
            "/v1/chat/classifications",
            {"messages": []},
            "must not be an empty list (body.messages)",
        ),
        ("/v1/ocr", {"pages": [1]}, "missing: required by /v1/ocr (body.document)"),
    ],
)
def test_endpoint_specific_body_checks(
    tmp_path: Path, endpoint: str, body: dict[str, object], expected: str
) -> None:
    """Each endpoint requires its own body keys and names the missing field."""
    path = write(tmp_path, jsonl({"custom_id": "x", "body": body}))
    assert problems_of(path, endpoint).problems == (f"{path}:1: {expected}",)


GOOD_BODIES: dict[str, dict[str, object]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9},
    "/v1/embeddings": {"input": ["a", "b"]},
    "/v1/fim/completions": {"prompt": "def f(", "suffix": "return 1"},
    "/v1/moderations": {"input": "text"},
    "/v1/chat/moderations": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/ocr": {"document": {"document_url": "https://example.com/a.pdf"}},
    "/v1/classifications": {"input": ["a"]},
    "/v1/chat/classifications": {"input": [{"role": "user", "content": "hi"}]},
    "/v1/conversations": {"inputs": "hello"},
    "/v1/audio/transcriptions": {"file_url": "https://example.com/a.mp3"},
    "/v1/responses": {"input": "hello"},
    "/v1/completions": {"prompt": "hello"},
}


@pytest.mark.parametrize("endpoint", sorted(GOOD_BODIES))
def test_good_files_of_each_endpoint(tmp_path: Path, endpoint: str) -> None:
    """A valid file gives its request count, byte size, sha256 and token estimate."""
    request = {"custom_id": "r", "body": GOOD_BODIES[endpoint]}
    data = jsonl(*({**request, "custom_id": f"r{i}"} for i in range(5)))
    path = write(tmp_path, data)
    summary = validate_input(path, endpoint=endpoint)
    tokens = estimate_tokens(request)
    cap = output_cap(request)
    assert summary == InputSummary(
        path=path,
        requests=5,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        prompt_tokens=5 * tokens,
        max_request_tokens=tokens,
        max_output_tokens=5 * (cap or 0),
        uncapped_requests=5 if cap is None else 0,
    )


def test_output_caps_are_summed_and_uncapped_requests_counted(tmp_path: Path) -> None:
    """Two requests cap their output (10 + 20 tokens), one does not."""
    lines = [
        {"custom_id": "a", "body": {**GOOD_BODIES[CHAT], "max_tokens": 10}},
        {"custom_id": "b", "body": {**GOOD_BODIES[CHAT], "max_tokens": 20}},
        {
            "custom_id": "c",
            "body": {k: v for k, v in GOOD_BODIES[CHAT].items() if k != "max_tokens"},
        },
    ]
    path = write(tmp_path, jsonl(*lines))
    summary = validate_input(path, endpoint=CHAT)
    assert (summary.max_output_tokens, summary.uncapped_requests) == (30, 1)


def test_every_mistral_endpoint_has_a_good_example() -> None:
    """The good-file table covers every endpoint Mistral accepts."""
    assert set(MISTRAL_ENDPOINTS) <= set(GOOD_BODIES)


def test_unknown_endpoint_lists_the_valid_ones(tmp_path: Path) -> None:
    """A typo in the endpoint is refused before the file is read, listing the choices."""
    path = write(tmp_path, jsonl(chat("a")))
    error = problems_of(path, "/v1/chat/completion")
    assert error.summary.startswith("unknown endpoint '/v1/chat/completion': use one of ")
    for endpoint in ENDPOINTS:
        assert endpoint in error.summary


def test_crlf_and_missing_final_newline_are_accepted(tmp_path: Path) -> None:
    """CRLF endings are JSON whitespace; the last line may lack its newline; bytes unchanged."""
    data = json.dumps(chat("a")).encode() + b"\r\n" + json.dumps(chat("b")).encode()
    path = write(tmp_path, data)
    summary = validate_input(path, endpoint=CHAT)
    assert (summary.requests, summary.bytes) == (2, len(data))
    assert summary.sha256 == hashlib.sha256(data).hexdigest()


def test_trailing_blank_lines_are_an_error(tmp_path: Path) -> None:
    """One final newline is fine; an empty line after it is not."""
    path = write(tmp_path, jsonl(chat("a")) + b"\n")
    assert problems_of(path).problems == (f"{path}:2: {EMPTY_LINE}",)


def test_bom_on_a_later_line_is_named_too(tmp_path: Path) -> None:
    """Concatenated files can carry a BOM mid-file: same message, right line."""
    path = write(tmp_path, jsonl(chat("a")) + b"\xef\xbb\xbf" + jsonl(chat("b")))
    (problem,) = problems_of(path).problems
    assert problem.startswith(f"{path}:2: starts with a UTF-8 byte order mark (BOM)")


def test_whitespace_only_line_is_an_empty_line(tmp_path: Path) -> None:
    """Spaces and tabs alone count as an empty line."""
    path = write(tmp_path, jsonl(chat("a")) + b" \t \n" + jsonl(chat("b")))
    assert problems_of(path).problems == (f"{path}:2: {EMPTY_LINE}",)


def test_deeply_nested_json_is_reported_not_raised(tmp_path: Path) -> None:
    """A line nested beyond the parser's recursion limit is one problem, not a crash."""
    path = write(tmp_path, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert problems_of(path).problems == (f"{path}:1: not valid JSON: nested too deeply",)


def test_duplicates_across_files_name_the_other_file(tmp_path: Path) -> None:
    """custom_id is unique over all the inputs of one job."""
    first = write(tmp_path, jsonl(chat("a"), chat("b")), "first.jsonl")
    second = write(tmp_path, jsonl(chat("c"), chat("b")), "second.jsonl")
    error = problems_of([first, second])
    assert error.problems == (f"{second}:2: duplicate 'b', first used on {first}:2 (custom_id)",)
    assert "in 2 input files: 1 problem;" in error.summary


def test_many_duplicates_of_one_id_each_point_to_the_first(tmp_path: Path) -> None:
    """Every repeat names the first occurrence, not the previous repeat."""
    path = write(tmp_path, jsonl(chat("x"), chat("y"), chat("x"), chat("x")))
    assert problems_of(path).problems == (
        f"{path}:3: duplicate 'x', first used on line 1 (custom_id)",
        f"{path}:4: duplicate 'x', first used on line 1 (custom_id)",
    )


def test_validate_inputs_returns_one_summary_per_file(tmp_path: Path) -> None:
    """Summaries come back in input order, each with its own counts and hash."""
    first = write(tmp_path, jsonl(chat("a"), chat("b")), "1.jsonl")
    second = write(tmp_path, jsonl(chat("c")), "2.jsonl")
    summaries = validate_inputs([str(first), second], endpoint=CHAT)
    assert [(s.path, s.requests) for s in summaries] == [(first, 2), (second, 1)]


def test_problem_cap_lists_the_first_and_counts_the_rest(tmp_path: Path) -> None:
    """Only max_problems entries are listed; the summary gives the total."""
    path = write(tmp_path, b"".join(b"{}\n" for _ in range(30)))
    error = problems_of(path, max_problems=5)
    # Each {} line has two problems: no custom_id and no body.
    assert error.problems == (
        f"{path}:1: missing (custom_id)",
        f"{path}:1: missing (body)",
        f"{path}:2: missing (custom_id)",
        f"{path}:2: missing (body)",
        f"{path}:3: missing (custom_id)",
    )
    assert error.summary.endswith(
        "60 problems; the job is rejected and nothing was uploaded "
        "(the first 5 are listed, 55 more)"
    )


def test_problem_cap_keeps_line_order_with_late_duplicates(tmp_path: Path) -> None:
    """Duplicates found in pass two still sort before later problems from pass one."""
    lines = [chat("a"), chat("a")] + [{"custom_id": f"n{i}"} for i in range(5)]
    path = write(tmp_path, jsonl(*lines))
    error = problems_of(path, max_problems=3)
    assert error.problems == (
        f"{path}:2: duplicate 'a', first used on line 1 (custom_id)",
        f"{path}:3: missing (body)",
        f"{path}:4: missing (body)",
    )
    assert "6 problems" in error.summary


def test_missing_file_directory_and_twice_listed(tmp_path: Path) -> None:
    """File-level problems are listed like line problems, for every input of the job."""
    good = write(tmp_path, jsonl(chat("a")))
    missing = tmp_path / "nope.jsonl"
    error = problems_of([good, missing, tmp_path])
    assert error.problems == (
        f"{missing}: input file does not exist",
        f"{tmp_path}: not a regular file; an input is a JSONL file",
    )
    with pytest.raises(InputError, match="listed twice in the job's inputs"):
        validate_inputs([good, str(good)], endpoint=CHAT)
    with pytest.raises(InputError, match="at least one input file"):
        validate_inputs([], endpoint=CHAT)


def test_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A 600 MB (sparse) file fails on its size alone, at once."""
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as stream:
        stream.truncate(600 * 1024 * 1024)
    error = problems_of(path)
    assert error.problems == (
        f"{path}: 629,145,600 bytes, more than the limit of 536,870,912 bytes per input file "
        "(max_file_bytes): split it into several files (a job may list several inputs)",
    )


def test_too_many_requests_over_the_job(tmp_path: Path) -> None:
    """max_requests applies to the sum over the job's files and is listed first."""
    first = write(tmp_path, jsonl(*(chat(f"a{i}") for i in range(3))), "1.jsonl")
    second = write(tmp_path, jsonl(*(chat(f"b{i}") for i in range(3))), "2.jsonl")
    error = problems_of([first, second], max_requests=5)
    assert error.problems == (
        "the job's inputs: 6 requests, more than the limit of 5 per batch (max_requests): "
        "split the input into several jobs, or let the orchestrator split it (split_requests)",
    )
    assert validate_inputs([first], endpoint=CHAT, limits=InputLimits(max_requests=3))


def test_long_lines_and_multibyte_characters_across_chunks(tmp_path: Path) -> None:
    """Lines longer than the 1 MiB read size, and UTF-8 split by a chunk edge, are fine."""
    long = chat("long", "é" * (3 * 1024 * 1024))
    filler = chat("filler", "x" * (1024 * 1024 - 70))
    data = jsonl(filler, long, chat("after", "ü€😀"))
    path = write(tmp_path, data)
    summary = validate_input(path, endpoint=CHAT)
    assert (summary.requests, summary.sha256) == (3, hashlib.sha256(data).hexdigest())


def test_line_numbers_stay_right_after_a_bad_utf8_block(tmp_path: Path) -> None:
    """The per-line fallback for undecodable blocks keeps counting lines correctly."""
    lines = [json.dumps(chat(f"r{i}")).encode() for i in range(50)]
    lines[10] = lines[10].replace(b"hi", b"h\xff")
    lines[40] = b"{}"
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    offset = lines[10].index(b"\xff")
    assert problems_of(path).problems == (
        f"{path}:11: not valid UTF-8: byte 0xff at byte offset {offset} of the line; batch "
        "inputs must be UTF-8",
        f"{path}:41: missing (custom_id)",
        f"{path}:41: missing (body)",
    )


def test_input_limits_are_checked() -> None:
    """Nonsense limits are refused when built."""
    with pytest.raises(ValueError, match="max_requests"):
        InputLimits(max_requests=0)
    with pytest.raises(ValueError, match="max_problems"):
        InputLimits(max_problems=0)


line_bytes = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["custom_id", "body", "messages", "input"]), inner, max_size=3
                )
            ),
            max_leaves=8,
        ),
    ),
    st.builds(
        lambda cid, body: json.dumps({"custom_id": cid, "body": body}).encode(),
        st.text(max_size=4),
        st.dictionaries(
            st.sampled_from(["messages", "input", "prompt"]),
            st.lists(st.dictionaries(st.text(max_size=3), st.text(max_size=3)), max_size=2),
            max_size=2,
        ),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line_bytes, max_size=12),
    separator=st.sampled_from([b"\n", b"\r\n"]),
    endpoint=st.sampled_from(ENDPOINTS),
)
def test_fuzzed_lines_only_ever_raise_input_error(
    lines: list[bytes], separator: bytes, endpoint: str
) -> None:
    """Whatever the bytes, validation returns a summary or raises InputError, nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.jsonl"
        data = separator.join(lines)
        path.write_bytes(data)
        try:
            summary = validate_input(path, endpoint=endpoint, limits=InputLimits(max_problems=3))
        except InputError as error:
            assert error.problems or error.summary
            assert len(error.problems) <= 3
        else:
            assert summary.bytes == len(data)
            assert summary.requests >= 1


def spec(**changes: object) -> JobSpec:
    """A job spec with sensible defaults."""
    values: dict[str, object] = {
        "name": "job",
        "workspace": "main",
        "model": "mistral-small-latest",
        "endpoint": CHAT,
        "inputs": ("/a.jsonl", "/b.jsonl"),
        "metadata": {"team": "research"},
        "timeout_hours": 24,
        "priority": 0,
    }
    values.update(changes)
    return JobSpec(**values)  # type: ignore[arg-type]


SUMMARIES = (
    InputSummary(path=Path("/a.jsonl"), requests=1, bytes=10, sha256="aa" * 32),
    InputSummary(path=Path("/b.jsonl"), requests=2, bytes=20, sha256="bb" * 32),
)


def test_definition_hash_follows_the_documented_recipe() -> None:
    """sha256 of the canonical JSON of endpoint, input hashes, metadata, model, timeout."""
    canonical = (
        '{"endpoint":"/v1/chat/completions","inputs":["'
        + "aa" * 32
        + '","'
        + "bb" * 32
        + '"],"metadata":{"team":"research"},"model":"mistral-small-latest","timeout_hours":24}'
    )
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert definition_hash(spec(), SUMMARIES) == expected


def test_definition_hash_ignores_name_priority_workspace_and_paths() -> None:
    """Renaming the job or moving its files is the same definition."""
    moved = tuple(attrs.evolve(s, path=Path("/elsewhere") / s.path.name) for s in SUMMARIES)
    same = spec(name="other", priority=9, workspace="w2", inputs=("/x.jsonl", "/y.jsonl"))
    assert definition_hash(same, moved) == definition_hash(spec(), SUMMARIES)
    assert definition_hash(spec(metadata={"b": "2", "a": "1"}), SUMMARIES) == definition_hash(
        spec(metadata={"a": "1", "b": "2"}), SUMMARIES
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "mistral-large-latest"},
        {"endpoint": "/v1/embeddings"},
        {"metadata": {"team": "other"}},
        {"metadata": {}},
        {"timeout_hours": 48},
    ],
)
def test_definition_hash_changes_with_the_definition(changes: dict[str, object]) -> None:
    """Model, endpoint, metadata and timeout are part of the identity."""
    assert definition_hash(spec(**changes), SUMMARIES) != definition_hash(spec(), SUMMARIES)


def test_definition_hash_depends_on_input_order_and_count() -> None:
    """Swapping the inputs is a different job; a summary per input is required."""
    assert definition_hash(spec(), SUMMARIES[::-1]) != definition_hash(spec(), SUMMARIES)
    with pytest.raises(ValueError, match="2 inputs but 1 summaries"):
        definition_hash(spec(), SUMMARIES[:1])


def test_hash_collisions_are_not_reported_as_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every id hashing alike, pass two still tells real duplicates from collisions."""
    monkeypatch.setattr("orchestrator.inputs._scan._id_hash", lambda _: 42)
    path = write(tmp_path, jsonl(*(chat(f"r{i}") for i in range(100))))
    assert validate_input(path, endpoint=CHAT).requests == 100
    path = write(tmp_path, jsonl(chat("a"), chat("b"), chat("a")), "dup.jsonl")
    assert problems_of(path).problems == (
        f"{path}:3: duplicate 'a', first used on line 1 (custom_id)",
    )
