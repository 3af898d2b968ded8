"""Pseudonyms (docs/privacy.md): keyed, per customer, stable, and what the access log shows."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import SecretStr

from allotment.config import Settings
from allotment.privacy.pseudonyms import Pseudonyms, derive, from_settings, loggable_path
from allotment.signing import secret


def test_a_pseudonym_is_keyed_per_customer_stable_and_its_own_pseudonym(tmp_path) -> None:
    one = from_settings(Settings(data_dir=tmp_path, pseudonym_secret=SecretStr("s1")))
    same = from_settings(Settings(data_dir=tmp_path, pseudonym_secret=SecretStr("s1")))
    other = from_settings(Settings(data_dir=tmp_path, pseudonym_secret=SecretStr("s2")))
    ref = one.of("acme", "ann")
    assert ref.startswith("psn_") and len(ref) == 36 and "ann" not in ref
    assert same.of("acme", "ann") == ref  # every process of the deployment agrees
    assert other.of("acme", "ann") != ref  # another secret, other pseudonyms
    assert one.of("globex", "ann") != ref  # does not link across customers
    assert one.of("acme", "ann\x00x") != one.of("acme\x00ann", "x")
    assert one.of("acme", ref) == ref  # an erased row keeps its pseudonym
    assert one.ref("acme", None) is None


def test_without_its_own_secret_the_key_derives_from_the_signing_secret(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    value, _ = secret.secret(settings)  # the file, made on first use
    assert from_settings(settings).of("acme", "ann") == Pseudonyms(derive(value)).of("acme", "ann")
    signed = Settings(data_dir=tmp_path, signing_secret=SecretStr("sign"))
    assert from_settings(signed).of("acme", "ann") == Pseudonyms(derive("sign")).of("acme", "ann")


def test_the_access_log_shows_a_path_subject_by_pseudonym() -> None:
    pseudonyms = Pseudonyms(derive("k"))
    app = SimpleNamespace(state=SimpleNamespace(pseudonyms=pseudonyms))
    route = SimpleNamespace(path="/v1/customers/{key}/subjects/{subject:path}/erase")
    scope = {
        "app": app,
        "route": route,
        "path": "/v1/customers/acme/subjects/a/b/erase",
        "path_params": {"key": "acme", "subject": "a/b"},
    }
    ref = pseudonyms.of("acme", "a/b")
    assert loggable_path(scope) == f"/v1/customers/acme/subjects/{ref}/erase"
    assert loggable_path({"path": "/v1/check", "path_params": {}}) == "/v1/check"
    bare = {**scope, "app": SimpleNamespace(state=SimpleNamespace())}
    assert loggable_path(bare) == route.path
