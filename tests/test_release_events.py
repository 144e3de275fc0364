"""What a release event may ask for (tasks/releases.py): the current release of a watched repo and an
allowed recipe set, nothing more. Pure checks of the payload against a watchlist, and what the watcher
announces (head commits, an author entry's limit and Hub filters) against the local Hub; the same
refusals end to end, on a Prefect server and a worker, are in tests/test_triggers.py.
"""

import time

import pytest
import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from pydantic import ValidationError
from safetensors.torch import save_file

from quantforge.core.errors import QuantforgeError
from quantforge.core.retries import is_transient
from quantforge.tasks.releases import Release, release_request, watched_release
from quantforge.tasks.watchlist import RefusedRelease, WatchEntry, Watchlist
from quantforge_testing.hub import HubServer

SHA = "0123456789abcdef0123456789abcdef01234567"
WATCHLIST = Watchlist.model_validate(
    {
        "defaults": {"recipes": "quick", "evaluation": "wikitext2", "output_dir": "/srv/quantforge"},
        "watch": [
            {"model": "org/model", "allowed_recipes": ["default"], "settings": {"calibration": "wikitext2"}},
            {"author": "org", "name_pattern": "small-*", "pipeline_tag": None},
        ],
    }
)


def at_head(entry: WatchEntry, repo: str) -> Release:
    """The Hub, as far as these pure checks go: every repo an entry names is announced, at SHA."""
    assert entry.names(repo)
    return Release(repo=repo, sha=SHA)


def no_hub(entry: WatchEntry, repo: str):
    raise AssertionError(f"looked {repo} up on the Hub: the event is refused before that")


def test_an_event_names_the_release_and_the_watchlist_says_the_rest():
    request = release_request(WATCHLIST, {"repo": "org/model", "sha": SHA}, at_head)
    assert request == WATCHLIST.request_for(WATCHLIST.watch[0], "org/model", SHA)
    assert (request.recipes, str(request.output_dir), request.revision) == ("quick", "/srv/quantforge", SHA)
    chosen = release_request(WATCHLIST, {"repo": "org/model", "sha": SHA, "recipes": "default"}, at_head)
    assert chosen.recipes == "default" and chosen.calibration == "wikitext2"
    assert release_request(WATCHLIST, {"repo": "org/small-1", "sha": SHA}, at_head).model == "org/small-1"


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            {"repo": "org/model", "sha": SHA, "request": {"allow_pickle": True}},
            r"^`request`: \{'allow_pickle': True\} is not something an event may set",
        ),
        ({"repo": "org/model", "sha": SHA, "promote_best": True}, r"^`promote_best`: True is not something"),
        ({"repo": "org/model", "sha": SHA, "output_dir": "/etc"}, r"^`output_dir`: '/etc' is not something"),
        ({"repo": "org/model", "sha": "main"}, r"^`sha`: 'main' is not a commit sha"),
        ({"repo": "org/model", "sha": SHA.upper()}, r"^`sha`: '0123.*' is not a commit sha"),
        ({"repo": "org/model"}, r"^`sha`: missing"),
        ({"repo": "org/../etc", "sha": SHA}, r"^`repo`: 'org/../etc' is not a Hub repo id"),
        ({"repo": "org/small-..", "sha": SHA}, r"^`repo`: 'org/small-..' is not a Hub repo id"),
        (
            {"repo": "other/model", "sha": SHA},
            r"^`repo`: 'other/model' is not covered by any watchlist entry",
        ),
        ({"repo": "org/large-1", "sha": SHA}, r"^`repo`: 'org/large-1' is not covered"),
        (
            {"repo": "org/model", "sha": SHA, "recipes": "pytorch"},
            r"^`recipes`: 'pytorch' is not allowed for org/model \(allowed: default, quick\)",
        ),
        (
            {"repo": "org/model", "sha": SHA, "recipes": "/tmp/mine.yaml"},
            r"^`recipes`: '/tmp/mine.yaml' is not",
        ),
        ({"repo": "org/small-1", "sha": SHA, "recipes": "default"}, r"^`recipes`: 'default' is not allowed"),
        ({"repo": "org/model", "sha": SHA, "recipes": ["quick"]}, r"^`recipes`: \['quick'\] is not a string"),
    ],
)
def test_events_asking_for_more_are_refused_naming_the_field(payload, message):
    with pytest.raises(RefusedRelease, match=message):
        release_request(WATCHLIST, payload, at_head)


@pytest.mark.parametrize(
    "payload",
    [
        {"repo": "org/model", "sha": "f" * 100_000},
        {"repo": "org/model", "sha": SHA, "x" * 100_000: 1},
        {"repo": "org/model", "sha": SHA, "recipes": "x" * 100_000},
        {"repo": "other/" + "x" * 100_000, "sha": SHA},
        {"repo": "o" * 96 + "/" + "x" * 96, "sha": SHA},  # a repo id as long as the Hub allows
    ],
)
def test_echoed_keys_and_values_are_bounded(payload):
    with pytest.raises(RefusedRelease) as refused:
        release_request(WATCHLIST, payload, at_head)
    assert len(str(refused.value)) < 200 and "\n" not in str(refused.value)


def test_repo_ids_are_bounded_like_the_hubs():
    """96 characters per part, as on the Hub; a longer one is refused before anything is looked up."""
    longest = "o" * 96 + "/" + "m" * 96
    watchlist = Watchlist.model_validate({"defaults": WATCHLIST.defaults, "watch": [{"model": longest}]})
    assert release_request(watchlist, {"repo": longest, "sha": SHA}, at_head).model == longest
    for repo in ("o" * 97 + "/m", "o/" + "m" * 97):
        with pytest.raises(RefusedRelease, match=r"^`repo`: '[om]+.* is not a Hub repo id"):
            release_request(watchlist, {"repo": repo, "sha": SHA}, no_hub)
    with pytest.raises(ValidationError, match="string_pattern_mismatch"):
        Watchlist.model_validate({"defaults": WATCHLIST.defaults, "watch": [{"model": "o/" + "m" * 97}]})


def test_a_request_the_watchlist_cannot_make_is_refused_naming_the_field():
    """A setting the request refuses when the event comes (not when the watchlist loaded) ends Refused."""
    entry = WatchEntry(model="org/model", settings={"num_samples": 0})
    watchlist = Watchlist.model_construct(defaults=dict(WATCHLIST.defaults), watch=[entry])  # unchecked
    with pytest.raises(RefusedRelease, match=r"^`num_samples`: 0 Input should be greater than or equal to 1"):
        release_request(watchlist, {"repo": "org/model", "sha": SHA}, at_head)


def test_allowed_recipe_sets_are_checked_when_the_watchlist_loads():
    with pytest.raises(QuantforgeError, match=r"`recipes`: unknown recipe set 'nope'"):
        Watchlist.model_validate(
            {
                "defaults": {"calibration": "wikitext2"},
                "watch": [{"model": "a/b", "allowed_recipes": ["nope"]}],
            }
        )


def test_an_author_entrys_hub_filters_apply_to_events(tmp_path, monkeypatch):
    """The watcher announces no repo over the entry's size or of another pipeline: nor may an event."""
    watchlist = Watchlist.model_validate(
        {
            "defaults": {"recipes": "quick", "evaluation": "wikitext2"},
            "watch": [{"author": "org", "name_pattern": "chat-*", "max_parameters": 1000}],
        }
    )
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        shas = {}
        for name, elements, tag in (
            ("chat-small", 500, "text-generation"),
            ("chat-big", 5000, "text-generation"),
            ("chat-vision", 500, "image-classification"),
        ):
            folder = tmp_path / name
            folder.mkdir()
            save_file({"w": torch.zeros(elements)}, folder / "model.safetensors")
            (folder / "README.md").write_text(f"---\npipeline_tag: {tag}\n---\n")
            shas[name] = hub.seed_repo(f"org/{name}", folder)
        request = release_request(
            watchlist, {"repo": "org/chat-small", "sha": shas["chat-small"]}, watched_release
        )
        assert request.model == "org/chat-small"
        for name in ("chat-big", "chat-vision"):
            with pytest.raises(RefusedRelease, match=rf"^`repo`: 'org/{name}' is not covered"):
                release_request(watchlist, {"repo": f"org/{name}", "sha": shas[name]}, watched_release)


def seeded(hub: HubServer, tmp_path, repo: str, text: str, **settings) -> str:
    """Commit a one-file tree to `repo`'s main; its commit sha."""
    folder = tmp_path / "trees" / repo / str(time.monotonic_ns())
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(f"---\npipeline_tag: text-generation\n---\n{text}\n")
    return hub.seed_repo(repo, folder, **settings)


def test_an_event_names_the_current_head_and_nothing_older_or_off_main(tmp_path, monkeypatch):
    """The watcher announces the head of the default branch: an event for an older commit, or for a commit
    of another branch (a community pull request's), is refused naming the sha, for a model entry and for
    an author entry alike."""
    watchlist = Watchlist.model_validate(
        {"defaults": {"recipes": "quick"}, "watch": [{"model": "org/model"}, {"author": "org"}]}
    )
    with HubServer(tmp_path / "hub", tokens={"token-m": "mallory"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        for repo in ("org/model", "org/other"):
            old = seeded(hub, tmp_path, repo, "first release")
            head = seeded(hub, tmp_path, repo, "second release")
            mallory = HfApi(endpoint=hub.url, token="token-m")
            mallory.create_branch(repo, branch="pr-1")
            proposed = mallory.upload_file(
                path_or_fileobj=b"{{ evil }}",
                path_in_repo="chat_template.jinja",
                repo_id=repo,
                revision="pr-1",
            ).oid
            assert len({old, head, proposed}) == 3
            assert release_request(watchlist, {"repo": repo, "sha": head}, watched_release).revision == head
            for sha in (old, proposed):
                with pytest.raises(
                    RefusedRelease, match=rf"^`sha`: '{sha}' is not the current head of '{repo}'"
                ):
                    release_request(watchlist, {"repo": repo, "sha": sha}, watched_release)


def test_an_author_entry_covers_only_the_repos_the_watcher_announces(tmp_path, monkeypatch):
    """The watcher looks at the author's `limit` most recently modified repos: an event for an older repo
    of the author is not covered, even at its head."""
    watchlist = Watchlist.model_validate(
        {"defaults": {"recipes": "quick"}, "watch": [{"author": "org", "limit": 2}]}
    )
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        shas = {}
        for name in ("first", "second", "third"):
            shas[name] = seeded(hub, tmp_path, f"org/{name}", name)
            time.sleep(0.01)  # modification times a millisecond apart at least: an order to sort by
        for name in ("second", "third"):
            request = release_request(watchlist, {"repo": f"org/{name}", "sha": shas[name]}, watched_release)
            assert request.model == f"org/{name}"
        with pytest.raises(RefusedRelease, match=r"^`repo`: 'org/first' is not covered"):
            release_request(watchlist, {"repo": "org/first", "sha": shas["first"]}, watched_release)


def test_a_repo_the_hub_does_not_show_is_refused(tmp_path, monkeypatch):
    """No such repo, or a private one this worker cannot see: Refused, not a traceback; a Hub that fails
    (429, 5xx) is still retried by the lookup task, not refused."""
    watchlist = Watchlist.model_validate(
        {
            "defaults": {"recipes": "quick"},
            "watch": [{"model": "org/gone"}, {"model": "org/hidden"}, {"author": "lab"}],
        }
    )
    with HubServer(tmp_path / "hub") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        sha = seeded(hub, tmp_path, "org/hidden", "private", private=True)
        seeded(hub, tmp_path, "lab/hidden", "private", private=True)
        for repo in ("org/gone", "org/hidden"):
            with pytest.raises(RefusedRelease, match=rf"^`repo`: '{repo}' is not on the Hub"):
                release_request(watchlist, {"repo": repo, "sha": sha}, watched_release)
        for repo in ("lab/gone", "lab/hidden"):
            with pytest.raises(RefusedRelease, match=rf"^`repo`: '{repo}' is not covered"):
                release_request(watchlist, {"repo": repo, "sha": sha}, watched_release)
        hub.inject_fault("GET", "/api/models/org/gone", status=503, times=1)
        with pytest.raises(HfHubHTTPError) as failed:  # the task's retry condition sees it, not a refusal
            watched_release(watchlist.watch[0], "org/gone")
        assert is_transient(failed.value)
