"""The key layout and the Lua scripts: one hash slot per script call, scripts found from any
working directory, and every id the API accepts stored without colliding with metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis.crc import key_slot

from app.runtime import Runtime
from core.events import apply_batch
from core.storage import Keys, Served, SlateArm, new_request_id
from core.storage.catalogue import claim_post_id_call, put_post_call, withdraw_post_call
from core.storage.counting import apply_events_call, prune_expired_call
from core.storage.experiment_counts import count_slate_call
from core.storage.experiments import start_experiment_call, stop_experiment_call
from core.storage.keys import DECISION_SHARDS, JOURNAL_SHARDS, decision_shard, journal_shard
from core.storage.scripts import LUA_DIR, SCRIPTS, ScriptCall, source
from core.storage.serving import serve_slate_call
from core.storage.shown import record_shown_call
from tests.conftest import register, written

# Ids as the API accepts them (1-64 of A-Z a-z 0-9 _ . : -), the odd ones included.
IDS = ["f", "_u", "_p", "_t", "u", "p", "i:x", "_i", "a.b-c:d_e", ":", "-", ".", "Z" * 64]


def calls(keys: Keys, forum: str, post: str, user: str) -> dict[str, ScriptCall]:
    """One call of each script, as the storage layer builds it."""
    rid, other = new_request_id(user), new_request_id(user)
    events = [(rid, post, forum), (other, post, forum), (rid, "q", forum)]
    served = Served(rid, user, "two_level_ts", {post: forum, "q": "g"})
    # Slates of two experiments in one batch (one stopped, the next started).
    arms = {rid: SlateArm(post, user, 3), other: SlateArm(user + "x", post, 63)}
    return {
        "apply_events": apply_events_call(keys, "c", forum, events, 60, 10**8, 20, 2000, arms),
        "count_slate": count_slate_call(keys, SlateArm(post, user, 5), user, 60, 1),
        "prune_expired": prune_expired_call(
            keys, forum, time.time(), 1000, {post: ["a", "b"], user + "x": ["c"]}
        ),
        "serve_slate": serve_slate_call(keys, served, 60),
        "record_shown": record_shown_call(keys, user, "c", {post: 1.0}, 2.0, (60, 3), 600),
        "claim_post_id": claim_post_id_call(keys, post, forum, 3600),
        "put_post": put_post_call(keys, post, forum, time.time(), (None, 60.0, 3600.0), 60, 10**8),
        "withdraw_post": withdraw_post_call(keys, post, forum, time.time(), 3600, 10**8),
        "start_experiment": start_experiment_call(keys, post, "{}", time.time()),
        "stop_experiment": stop_experiment_call(keys, post, time.time(), "v", "{}"),
    }


@pytest.mark.parametrize("prefix", ["pb", "a:b-c.d"])
@pytest.mark.parametrize("name", IDS)
def test_every_script_call_stays_in_one_hash_slot(prefix: str, name: str) -> None:
    built = calls(Keys(prefix), forum=name, post=name, user=name)
    assert set(built) == set(SCRIPTS)
    # The outcome of a counted event is written in the counting step: its stream is in the slot.
    assert Keys(prefix).forum_outcomes(name) in built["apply_events"].keys
    # So are the variants' counts and results of both experiments.
    assert Keys(prefix).variant_stats(name, name + "x") in built["apply_events"].keys
    assert Keys(prefix).forum_results(name, name) in built["apply_events"].keys
    # A click's seen-limit step notes it for the re-click window too.
    assert Keys(prefix).clicked(name) in built["record_shown"].keys
    # Pruning a post takes it out of the variants' counts of every experiment named.
    assert Keys(prefix).variant_stats(name, name + "x") in built["prune_expired"].keys
    for script, call in built.items():
        slots = {key_slot(key.encode()) for key in call.keys}
        assert len(slots) == 1, (script, call.keys)
        assert all("{" + key.split("{", 1)[1].split("}")[0] + "}" in key for key in call.keys)


def test_a_brace_in_the_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="braces"):
        Keys("pb{x}")


def test_a_slate_is_only_served_under_its_members_request_id() -> None:
    served = Served(new_request_id("alice"), "bob", "two_level_ts", {"p": "f"})
    with pytest.raises(ValueError, match="not issued to this member"):
        serve_slate_call(Keys("pb"), served, 60)


def test_every_script_documents_its_keys_and_args_and_is_found_from_any_directory(
    tmp_path: Path,
) -> None:
    assert sorted(p.stem for p in LUA_DIR.glob("*.lua")) == sorted(
        [*SCRIPTS, "note_changes", "decayed"]
    )
    for name in SCRIPTS:
        head = (LUA_DIR / f"{name}.lua").read_text().split("\n\n")[0]
        assert "KEYS[1]" in head and "ARGV[1]" in head and f"{name}_call" in head, name
    assert "local function note_changes" in source("apply_events")
    assert "local function note_changes" not in source("serve_slate")
    assert "local function decayed_add" in source("apply_events")
    code = "from core.storage.scripts import source; print(len(source('put_post')))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert int(found.stdout) == len(source("put_post"))


def test_posts_named_like_metadata_count_on_their_own_post_and_forum(
    client: FlaskClient, rt: Runtime
) -> None:
    """Posts whose ids look like the served slate's or the stats hash's own fields, served to a
    member whose id uses every character allowed, count on the right post and forum."""
    posts = {name: f"forum-{i % 3}" for i, name in enumerate(IDS)}
    for post_id, forum_id in posts.items():
        register(client, post_id, forum_id)
    user = "Az09_.:-user"
    body = client.get("/v1/recommendations", query_string={"user_id": user, "n": 50}).json
    written(client)
    assert body is not None
    slate = {item["post_id"]: item["forum_id"] for item in body["items"]}
    assert slate == posts
    served = rt.storage.serving.lookup([body["request_id"]])[body["request_id"]]
    assert (served.user_id, served.forums) == (user, posts)
    rid, now = body["request_id"], time.time()
    for kind in ("impression", "click"):
        events = [[rid, post_id] for post_id in posts]
        outcome = apply_batch(rt.storage, kind, events, now, 3600, 3600)
        assert outcome.results == {"counted": len(posts)}
    for post_id, forum_id in posts.items():
        view = client.get(f"/v1/posts/{post_id}").json
        assert view is not None
        assert (view["forum_id"], view["impressions"], view["clicks"]) == (forum_id, 1, 1)
    for forum_id in set(posts.values()):
        forum = client.get(f"/v1/forums/{forum_id}").json
        expected = sum(f == forum_id for f in posts.values())
        assert forum is not None and (forum["impressions"], forum["clicks"]) == (expected,) * 2
    again = apply_batch(rt.storage, "click", [[rid, "_u"], [rid, "u"]], now, 3600, 3600)
    assert again.results == {"duplicate": 2}


def test_a_served_slate_is_kept_for_the_window_plus_the_grace(
    client: FlaskClient, rt: Runtime
) -> None:
    register(client, "p1", "f1")
    body = client.get("/v1/recommendations", query_string={"user_id": "u1"}).json
    written(client)
    assert body is not None and body["items"]
    keep = rt.settings.attribution_seconds + rt.settings.event_grace_seconds
    assert rt.settings.event_grace_seconds > 0
    ttl = rt.storage.client.ttl(rt.storage.keys.served(body["request_id"]))
    assert keep - 5 <= ttl <= keep


def test_the_shards_of_the_journal_and_the_decision_stream_stay_where_they_were() -> None:
    """Every process, of this release and the next, must find a batch or a decision in the
    shard it was written to: the counts and the hashes are part of the key layout (changing
    them needs readers of the old layout, see core.storage.keys)."""
    assert (JOURNAL_SHARDS, DECISION_SHARDS) == (16, 16)
    assert [journal_shard(b) for b in ("0" * 32, "f" * 32)] == [0, 1]
    assert [decision_shard(u) for u in ("alice", "bob")] == [2, 7]
    keys = Keys("pb")
    assert keys.pending(3) == "pb:{pending:3}:batches" and keys.decisions(3) == "pb:{decisions:3}"
    shards = keys.journals
    assert len({key_slot(k.encode()) for pair in shards for k in pair}) == JOURNAL_SHARDS + 1
    assert all(key_slot(a.encode()) == key_slot(b.encode()) for a, b in shards)
    assert len({key_slot(s.encode()) for s in keys.decision_streams}) == DECISION_SHARDS + 1
