"""What a release event may ask for (tasks/releases.py): the release and an allowed recipe set, nothing
more. Pure checks of the payload against a watchlist, and an author entry's Hub filters against the local
Hub; the same refusals end to end, on a Prefect server and a worker, are in tests/test_triggers.py.
"""

import pytest
import torch
from safetensors.torch import save_file

from quantforge.errors import QuantforgeError
from quantforge.hub_server import HubServer
from tasks.releases import release_request, repo_facts
from tasks.watchlist import RefusedRelease, Watchlist

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


def no_hub(repo: str):
    raise AssertionError(f"looked {repo} up on the Hub: no entry here filters on Hub metadata")


def test_an_event_names_the_release_and_the_watchlist_says_the_rest():
    request = release_request(WATCHLIST, {"repo": "org/model", "sha": SHA}, no_hub)
    assert request == WATCHLIST.request_for(WATCHLIST.watch[0], "org/model", SHA)
    assert (request.recipes, str(request.output_dir), request.revision) == ("quick", "/srv/quantforge", SHA)
    chosen = release_request(WATCHLIST, {"repo": "org/model", "sha": SHA, "recipes": "default"}, no_hub)
    assert chosen.recipes == "default" and chosen.calibration == "wikitext2"
    assert release_request(WATCHLIST, {"repo": "org/small-1", "sha": SHA}, no_hub).model == "org/small-1"


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
        release_request(WATCHLIST, payload, no_hub)


@pytest.mark.parametrize(
    "payload",
    [{"repo": "org/model", "sha": "f" * 100_000}, {"repo": "org/model", "sha": SHA, "x" * 100_000: 1}],
)
def test_echoed_keys_and_values_are_bounded(payload):
    with pytest.raises(RefusedRelease) as refused:
        release_request(WATCHLIST, payload, no_hub)
    assert len(str(refused.value)) < 250


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
            watchlist, {"repo": "org/chat-small", "sha": shas["chat-small"]}, repo_facts
        )
        assert request.model == "org/chat-small"
        for name in ("chat-big", "chat-vision"):
            with pytest.raises(RefusedRelease, match=rf"^`repo`: 'org/{name}' is not covered"):
                release_request(watchlist, {"repo": f"org/{name}", "sha": shas[name]}, repo_facts)
