"""Bad input corpus at process level: each bad input gets its specific message, nothing of a bad
job is uploaded, and the good jobs of the same daemon run to completion.

The corpus is ``tests/data/bad/`` (small files) plus what is too big to keep there: a sparse
600 MB file, lines of several MiB (one valid, one cut short), and an input larger than the
budget. One daemon process runs them all beside good jobs against an emulator process; jobs
files with a path-traversal name or unknown keys sit in its ``jobs_dir``. Configuration errors
that stop a daemon from starting (traversal in the main file, unknown keys, a missing API key
variable) are run as their own processes: exit code 2, one line naming file and key, and
nothing sent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from orchestrator.inputs import rules_for
from orchestrator.model import JobState, Outcome
from tests.survival.dialects import Wire
from tests.survival.harness import (
    API_KEY,
    API_KEY_ENV,
    DaemonProcess,
    EmulatorProcess,
    python_env,
    read_events,
)
from tests.survival.settings import report
from tests.survival.workload import read_ledger

pytestmark = pytest.mark.slow

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
BUDGET = 50
CHAT = "/v1/chat/completions"
LONG = 3 * 1024 * 1024
"""A line longer than the validator's 1 MiB read size."""


@attrs.frozen(kw_only=True)
class Case:
    """One job of the corpus run: its inputs and what must become of it."""

    name: str
    inputs: tuple[str, ...]
    """File names under the project's data/ folder."""
    expect: tuple[str, ...] = ()
    """Fragments of the ledger error, with ``{data}`` for the data folder; () = accepted."""
    endpoint: str = CHAT
    model: str | None = None
    """The job's model (None: the dialect's usual one)."""

    @property
    def accepted(self) -> bool:
        """Whether the job must run (and finish) rather than be rejected."""
        return not self.expect


def _chat_line(custom_id: str, content: str) -> str:
    # max_tokens after the messages: Anthropic needs it, and columns in messages stay put.
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 16}
    return json.dumps({"custom_id": custom_id, "body": body})


CASES = (
    Case(name="good", inputs=("good.jsonl",)),
    Case(name="crlf-accepted", inputs=("crlf.jsonl",)),
    Case(name="long-line-accepted", inputs=("long-valid.jsonl",)),
    Case(
        name="malformed-json",
        inputs=("not-json.jsonl",),
        expect=("{data}/not-json.jsonl:1: not valid JSON: Expecting ',' delimiter at column 77",),
    ),
    Case(
        name="custom-id",
        inputs=("custom-id.jsonl",),
        expect=(
            "{data}/custom-id.jsonl:1: missing (custom_id)",
            "{data}/custom-id.jsonl:2: empty string (custom_id)",
            "{data}/custom-id.jsonl:3: must be a non-empty string, got 7 (custom_id)",
        ),
    ),
    Case(
        name="duplicate-ids",
        inputs=("duplicate-ids.jsonl",),
        expect=("{data}/duplicate-ids.jsonl:3: duplicate 'a', first used on line 1 (custom_id)",),
    ),
    Case(
        name="not-object",
        inputs=("not-object.jsonl",),
        expect=("{data}/not-object.jsonl:1: a request must be a JSON object, got an array",),
    ),
    Case(
        name="non-object-body",
        inputs=("non-object-body.jsonl",),
        expect=(
            "{data}/non-object-body.jsonl:1: must be an object, got an array (body)",
            "{data}/non-object-body.jsonl:2: must be an object, got null (body)",
        ),
    ),
    Case(
        name="body",
        inputs=("body.jsonl",),
        expect=(
            "{data}/body.jsonl:1: missing (body)",
            "{data}/body.jsonl:4: must not be an empty list (body.messages)",
        ),
    ),
    Case(
        name="wrong-endpoint-keys",
        inputs=("wrong-endpoint-keys.jsonl",),
        expect=(
            "{data}/wrong-endpoint-keys.jsonl:1: missing: required by /v1/chat/completions "
            "(body.messages)",
            "{data}/wrong-endpoint-keys.jsonl:2: missing: required by /v1/chat/completions "
            "(body.messages)",
        ),
    ),
    Case(
        name="embeddings-given-chat",
        inputs=("good.jsonl",),
        endpoint="/v1/embeddings",
        expect=("{data}/good.jsonl:1: missing: required by /v1/embeddings (body.input)",),
    ),
    Case(
        name="empty-file",
        inputs=("empty.jsonl",),
        expect=("{data}/empty.jsonl: input file is empty (0 bytes): a batch needs a request",),
    ),
    Case(
        name="only-newlines",
        inputs=("only-newlines.jsonl",),
        expect=("{data}/only-newlines.jsonl: holds no requests, only empty lines",),
    ),
    Case(
        name="over-size",
        inputs=("huge.jsonl",),
        expect=(
            "{data}/huge.jsonl: 629,145,600 bytes, more than the limit of {max_bytes} bytes "
            "per input file (max_file_bytes)",
        ),
    ),
    Case(
        name="invalid-utf8",
        inputs=("invalid-utf8.jsonl",),
        expect=("{data}/invalid-utf8.jsonl:2: not valid UTF-8: byte 0xe9 at byte offset 73",),
    ),
    Case(
        name="bom",
        inputs=("bom.jsonl",),
        expect=("{data}/bom.jsonl:1: starts with a UTF-8 byte order mark (BOM)",),
    ),
    Case(
        name="blank-line",
        inputs=("blank-middle.jsonl",),
        expect=("{data}/blank-middle.jsonl:2: empty line",),
    ),
    Case(
        name="crlf-blank-line",
        inputs=("crlf-blank.jsonl",),
        expect=("{data}/crlf-blank.jsonl:2: empty line",),
    ),
    Case(
        name="nan",
        inputs=("nan.jsonl",),
        expect=("{data}/nan.jsonl:1: not valid JSON: NaN is not valid JSON",),
    ),
    Case(
        name="long-line-cut",
        inputs=("long-cut.jsonl",),
        expect=(
            "{data}/long-cut.jsonl:2: not valid JSON: Unterminated string starting at column 73",
        ),
    ),
    Case(
        name="one-bad-file-of-two",
        inputs=("good-2.jsonl", "not-json.jsonl"),
        expect=("{data}/not-json.jsonl:1: not valid JSON",),
    ),
    Case(
        name="missing-file",
        inputs=("nowhere.jsonl",),
        expect=("{data}/nowhere.jsonl", "does not exist"),
    ),
    Case(
        name="more-than-the-budget",
        inputs=("too-many.jsonl",),
        expect=(
            f"job 'more-than-the-budget' has {BUDGET + 1} requests but the workspace budget "
            f"is {BUDGET} pending requests: split the input",
        ),
    ),
)


OPENAI_CASES = (
    Case(
        name="openai-line-mistakes",
        inputs=("openai-lines.jsonl",),
        expect=(
            """{data}/openai-lines.jsonl:3: must be "POST", got 'GET' (method)""",
            "{data}/openai-lines.jsonl:4: must be the job's endpoint '/v1/chat/completions', "
            "got '/v1/embeddings'",
            "{data}/openai-lines.jsonl:5: missing: a line with a method needs url",
            "{data}/openai-lines.jsonl:6: missing: a line with a url needs method",
            "{data}/openai-lines.jsonl:7: names model 'gpt-4o', but the job's model is "
            "'gpt-4o-mini'",
            "{data}/openai-lines.jsonl:8: missing (body)",
        ),
    ),
    Case(name="openai-form-accepted", inputs=("openai-good.jsonl",)),
    Case(
        name="over-the-batch-limit",
        inputs=("fifty-thousand-and-one.jsonl",),
        expect=("50,001 requests", "50,000", "(max_requests)", "split_requests"),
    ),
    Case(
        name="token-budget-below-one-request",
        inputs=("good.jsonl",),
        model="tiny-model",
        expect=("token", "tiny-model", "never"),
    ),
)
"""What only the OpenAI dialect refuses: its own line form's mistakes, its per-batch limit
(with splitting off), and a model whose token budget is smaller than one request."""


ANTHROPIC_CASES = (
    Case(
        name="anthropic-line-mistakes",
        inputs=("anthropic-lines.jsonl",),
        expect=(
            "{data}/anthropic-lines.jsonl:1: must be 1 to 64 letters, digits, '_' or '-', got "
            "'has space': Anthropic refuses any other custom_id (custom_id)",
            "{data}/anthropic-lines.jsonl:2: must be 1 to 64 letters",
            "{data}/anthropic-lines.jsonl:3: missing: a batch request needs max_tokens >= 1 "
            "(params.max_tokens)",
            "{data}/anthropic-lines.jsonl:4: must be an integer >= 1, got 0 (params.max_tokens)",
            "{data}/anthropic-lines.jsonl:5: must not be true: a batch does not stream "
            "(params.stream)",
            "{data}/anthropic-lines.jsonl:6: give params or body, not both (params)",
            "{data}/anthropic-lines.jsonl:7: Anthropic takes only custom_id and params in a "
            "batch request, not method (remove method)",
            "{data}/anthropic-lines.jsonl:8: missing: required by /v1/messages (params.messages)",
        ),
    ),
    Case(name="anthropic-form-accepted", inputs=("anthropic-good.jsonl",)),
    Case(name="anthropic-crlf-accepted", inputs=("anthropic-crlf.jsonl",)),
    Case(
        name="over-the-batch-limit",
        inputs=("hundred-thousand-and-one.jsonl",),
        expect=("100,001 requests", "100,000", "(max_requests)", "split_requests"),
    ),
)
"""What only the Anthropic dialect refuses: custom_ids outside its pattern, a missing or zero
max_tokens, streaming, params beside body or other keys, and its per-batch limit (splitting
off). The body cases worded for chat completions are Mistral's and OpenAI's."""
_CHAT_ONLY = frozenset({"body", "wrong-endpoint-keys", "embeddings-given-chat", "crlf-accepted"})


def cases(wire: Wire) -> tuple[Case, ...]:
    """The corpus run on ``wire``'s dialect."""
    if wire.name == "anthropic":
        return tuple(
            attrs.evolve(case, endpoint=wire.chat_endpoint)
            for case in CASES + ANTHROPIC_CASES
            if case.name not in _CHAT_ONLY
        )
    return CASES + (OPENAI_CASES if wire.name == "openai" else ())


def write_data(data: Path) -> None:
    """The corpus files, plus the generated ones (sparse, long lines, over budget)."""
    data.mkdir(parents=True)
    for path in BAD.glob("*.jsonl"):
        shutil.copy(path, data / path.name)
    good = "".join(_chat_line(f"g-{i}", f"question {i}") + "\n" for i in range(5))
    (data / "good.jsonl").write_text(good)
    (data / "good-2.jsonl").write_text(good.replace('"g-', '"h-'))
    with (data / "huge.jsonl").open("wb") as stream:
        stream.truncate(600 * 1024 * 1024)  # sparse: costs no disk
    long_valid = _chat_line("long", "x" * LONG)
    (data / "long-valid.jsonl").write_text(_chat_line("short", "hi") + "\n" + long_valid + "\n")
    (data / "long-cut.jsonl").write_text(
        _chat_line("short", "hi") + "\n" + long_valid[: LONG // 2] + "\n"
    )
    (data / "too-many.jsonl").write_text(
        "".join(_chat_line(f"t-{i}", "q") + "\n" for i in range(BUDGET + 1))
    )
    (data / "fifty-thousand-and-one.jsonl").write_text(
        "".join(_chat_line(f"f-{i}", "q") + "\n" for i in range(50_001))
    )
    openai_good = (
        json.dumps(
            {
                "custom_id": f"o-{i}",
                "method": "POST",
                "url": CHAT,
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "q"}]},
            }
        )
        + "\n"
        for i in range(3)
    )
    (data / "openai-good.jsonl").write_text("".join(openai_good))
    anthropic_good = (
        json.dumps({"custom_id": f"p-{i}", "params": {"max_tokens": 8, "messages": [
            {"role": "user", "content": "q"}]}}) + "\n"
        for i in range(3)
    )  # fmt: skip
    (data / "anthropic-good.jsonl").write_text("".join(anthropic_good))
    crlf = (data / "anthropic-good.jsonl").read_bytes().replace(b"\n", b"\r\n")
    (data / "anthropic-crlf.jsonl").write_bytes(crlf.replace(b'"p-', b'"q-'))
    (data / "hundred-thousand-and-one.jsonl").write_text(
        "".join(_chat_line(f"c-{i}", "q") + "\n" for i in range(100_001))
    )


def write_config(root: Path, url: str, wire: Wire) -> Path:
    """The main config (every case as a job) and a jobs_dir with bad job files.

    The OpenAI workspace runs with splitting off (``split_requests = 0``), so its per-batch
    limits are refused as they stand, and a per-model token budget of one token.
    """
    jobs = []
    for case in cases(wire):
        inputs = ", ".join(json.dumps(f"data/{name}") for name in case.inputs)
        jobs.append(
            f'[[jobs]]\nname = "{case.name}"\nworkspace = "main"\ninputs = [{inputs}]\n'
            f'model = "{case.model or wire.model}"\nendpoint = "{case.endpoint}"\n'
        )
    (root / "jobs.d").mkdir()
    for name in ("path-traversal-name.toml", "unknown-keys.toml"):
        shutil.copy(BAD / "config" / name, root / "jobs.d" / name)
    if wire.name == "openai":  # an endpoint of another dialect: that jobs file alone is refused
        (root / "jobs.d" / "mistral-endpoint.toml").write_text(
            '[[jobs]]\nname = "fim"\nworkspace = "main"\ninput = "../data/good.jsonl"\n'
            'model = "gpt-4o-mini"\nendpoint = "/v1/fim/completions"\n'
        )
    settings = 'split_requests = 0\n[workspaces.main.token_budgets]\n"tiny-model" = 1\n'
    if wire.name == "anthropic":
        settings = "split_requests = 0\n"
    workspace = wire.provider_line() + (settings if wire.name != "mistral" else "")
    path = root / "orchestrator.toml"
    path.write_text(
        '[ledger]\nurl = "sqlite:///var/ledger.db"\n[results]\ndir = "var/results"\n'
        '[polling]\ninitial = "200ms"\nmax = "1s"\n'
        '[intake]\njobs_dir = "jobs.d"\n'
        f'[workspaces.main]\nbase_url = "{url}"\napi_key_env = "{API_KEY_ENV}"\n'
        f"pending_budget = {BUDGET}\n{workspace}\n" + "\n".join(jobs)
    )
    return path


@pytest.mark.timeout(180)
def test_bad_inputs_are_rejected_alone_with_their_message(tmp_path: Path, wire: Wire) -> None:
    """Every bad job is rejected with its message, nothing of it uploaded; good jobs finish."""
    emulator = EmulatorProcess(
        tmp_path,
        options=[*wire.emulator_flags, "--throughput", "500", "--validation-seconds", "0.2"],
    )
    corpus = cases(wire)
    max_bytes = f"{rules_for(wire.name).max_bytes:,}"
    daemon: DaemonProcess | None = None
    try:
        url = emulator.start()
        data = tmp_path / "data"
        write_data(data)
        config = write_config(tmp_path, url, wire)
        daemon = DaemonProcess(
            config, tmp_path / "daemon.log", env=python_env(**{API_KEY_ENV: API_KEY})
        )
        assert daemon.wait(timeout=120) == 0, daemon.log_text()
        uploaded = []
        if not wire.results_stream:  # Anthropic has no files API: its creates carry the lines
            with emulator.client() as client:
                listing = client.get("/v1/files", params={wire.files_page_param: 1000}).json()
                uploaded = [f["filename"] for f in listing["data"]]
        stats = emulator.stats()
    finally:
        if daemon is not None:
            daemon.kill()
        emulator.kill()

    jobs, files = read_ledger(config)
    by_name = {job.name: job for job in jobs}
    assert set(by_name) == {case.name for case in corpus}, "only the main file's jobs exist"
    for case in corpus:
        job = by_name[case.name]
        ours = [name for name in uploaded if name.startswith(f"{case.name}-")]
        if case.accepted:
            assert job.state is JobState.DONE and job.outcome is Outcome.SUCCEEDED, job
            assert len(ours) == uploads(wire, case), (case.name, ours)
            assert {f.kind for f in files[job.id]} == {"output"}
            continue
        assert job.state is JobState.REJECTED, (case.name, job.state)
        assert not ours, f"{case.name}: uploaded {ours} although the job was rejected"
        assert job.remote_id is None and job.input_file_ids == ()
        for fragment in case.expect:
            wanted = fragment.format(data=data, max_bytes=max_bytes)
            assert wanted in (job.error or ""), (case.name, job.error)
    accepted = [c for c in corpus if c.accepted]
    assert stats["files_uploaded"] == sum(uploads(wire, c) for c in accepted)
    assert stats["jobs_created"] == len(accepted)
    results = tmp_path / "var" / "results"
    assert sorted(p.name for p in results.iterdir()) == sorted(c.name for c in accepted)
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()

    errors = {
        r["error"] for r in read_events(daemon.log_path) if r["event"] == "intake.jobs_file_invalid"
    }
    jobs_d = tmp_path / "jobs.d"
    if wire.name == "openai":
        (fim,) = [e for e in errors if e.startswith(f"{jobs_d}/mistral-endpoint.toml")]
        assert "jobs[0].endpoint" in fim and "/v1/fim/completions" in fim, fim
        errors.remove(fim)
    assert errors == {
        f"{jobs_d}/path-traversal-name.toml: jobs[0].name: job name '../../escape' is not a safe "
        "name: it becomes a directory name, so it must be 1-128 characters of letters, digits, "
        "'.', '_' or '-', and not '.' or '..'",
        f"{jobs_d}/unknown-keys.toml: jobs[0].modle: unknown key 'modle'; did you mean 'model'?",
    }
    report(
        f"bad-inputs-{wire.name}",
        {
            "dialect": wire.name,
            "bad_inputs_tried": sum(1 for c in corpus if not c.accepted) + len(errors),
            "accepted_edge_cases": [c.name for c in accepted if c.name != "good"],
            "rejected_jobs": sorted(c.name for c in corpus if not c.accepted),
            "bad_jobs_files": sorted(Path(e.split(":")[0]).name for e in errors),
            "partial_submissions": 0,
        },
    )


def uploads(wire: Wire, case: Case) -> int:
    """Files the dialect uploads for an accepted case (OpenAI: one per batch, inputs joined)."""
    if wire.results_stream:
        return 0  # Anthropic: no upload, the create carries the requests
    return 1 if wire.name == "openai" else len(case.inputs)


CONFIG_ERRORS = {
    "traversal-in-main-file": (
        '[workspaces.main]\nbase_url = "{url}"\napi_key_env = "' + API_KEY_ENV + '"\n'
        '[[jobs]]\nname = "../escape"\nworkspace = "main"\ninput = "data/good.jsonl"\n'
        'model = "m"\nendpoint = "/v1/chat/completions"\n',
        "jobs[0].name: job name '../escape' is not a safe name",
    ),
    "unknown-key-in-main-file": (
        '[workspaces.main]\nbase_url = "{url}"\napi_key_env = "' + API_KEY_ENV + '"\n'
        "pending_budjet = 10\n",
        "workspaces.main.pending_budjet: unknown key 'pending_budjet'; did you mean "
        "'pending_budget'?",
    ),
    "missing-api-key-variable": (
        (BAD / "config" / "missing-api-key-env.toml")
        .read_text()
        .replace("http://127.0.0.1:9", "{url}")
        + '[[jobs]]\nname = "fine"\nworkspace = "main"\ninput = "data/good.jsonl"\n'
        'model = "m"\nendpoint = "/v1/chat/completions"\n',
        "workspaces.main.api_key_env: environment variable SURVIVAL_UNSET_API_KEY is not set: "
        "export it with the API key of workspace 'main'",
    ),
}


@pytest.mark.timeout(120)
def test_config_errors_stop_the_daemon_before_anything_is_sent(tmp_path: Path) -> None:
    """Traversal, unknown keys, a missing key variable: exit 2, one line, nothing uploaded."""
    emulator = EmulatorProcess(tmp_path, options=["--validation-seconds", "0.2"])
    try:
        url = emulator.start()
        for name, (text, message) in CONFIG_ERRORS.items():
            folder = tmp_path / name
            (folder / "data").mkdir(parents=True)
            (folder / "data" / "good.jsonl").write_text(_chat_line("a", "hi") + "\n")
            config = folder / "orchestrator.toml"
            config.write_text(text.replace("{url}", url))
            result = subprocess.run(
                [sys.executable, "-m", "orchestrator", "run", "--config", str(config),
                 "--migrate", "--exit-when-idle", "--no-live"],
                capture_output=True, timeout=60, check=False,
                env=python_env(**({} if "api-key" in name else {API_KEY_ENV: API_KEY})),
            )  # fmt: skip
            stderr = result.stderr.decode()
            assert result.returncode == 2, (name, stderr)
            assert stderr.startswith("orchestrator: config error: "), (name, stderr)
            assert f"{config}: {message}" in stderr, (name, stderr)
            assert stderr.count("\n") == 1, (name, stderr)
            assert "Traceback" not in stderr
        stats = emulator.stats()
        assert stats.get("files_uploaded", 0) == 0 and stats.get("jobs_created", 0) == 0
    finally:
        emulator.kill()
    report("bad-configs", {"config_errors_tried": sorted(CONFIG_ERRORS), "files_uploaded": 0})
