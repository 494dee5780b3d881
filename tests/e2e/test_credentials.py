"""Credentials Google refuses, through the real CLI: exit 6 with what is wrong and how to fix
it, never google-auth's tuple repr; an unreachable token endpoint is said as such. The token
endpoint is played locally (the key's token_uri), so nothing leaves the machine."""

from __future__ import annotations

import pytest

from tests.support import (
    DAY1,
    cli_env,
    describe,
    make_tokens,
    refusing_port,
    run_args,
    run_cli,
    summary,
    write_lines,
    write_service_account_key,
)


@pytest.fixture
def production_env(database_url, emulator, tmp_path):
    """This test's database, production FCM (no emulator): credentials are needed."""
    env = cli_env(database_url, emulator)
    del env["FCM_EMULATOR_HOST"]
    return env


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("invalid_grant", "Google refused the service-account key (invalid_grant: Invalid JWT"),
        ("invalid_client", "Google does not accept this service account (invalid_client"),
    ],
)
@pytest.mark.parametrize("transport", ["v1-direct", "v1"])
def test_a_key_google_refuses_says_what_and_how_to_fix_it(
    production_env, tmp_path, message_file, token_endpoint, transport, error, says
):
    uri, handler = token_endpoint
    handler.answer = (400, {"error": error, "error_description": "Invalid JWT Signature."})
    key = write_service_account_key(tmp_path / "key.json", "cred-prod", uri)
    production_env["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
    audience = write_lines(tmp_path / "audience.txt", make_tokens("c", range(3)))
    args = run_args(DAY1, audience, message_file, prefix="cred", pool_size=1, transport=transport)

    proc = run_cli(*args[:-1], env=production_env)  # a dry run: it validates with FCM

    assert proc.returncode == 6, describe(proc)
    message = summary(proc)["error"]
    assert says in message and "To fix: " in message and "GOOGLE_APPLICATION_CREDENTIALS" in message
    for raw in ("('", "{'error'", "RefreshError", "unexpected"):
        assert raw not in proc.stderr, describe(proc)


def test_an_unreachable_token_endpoint_is_not_called_a_credentials_problem(
    production_env, tmp_path, message_file
):
    audience = write_lines(tmp_path / "audience.txt", make_tokens("c", range(3)))
    args = run_args(DAY1, audience, message_file, prefix="cred", pool_size=1)
    with refusing_port() as closed:
        key = write_service_account_key(
            tmp_path / "key.json", "cred-prod", f"http://127.0.0.1:{closed}/token"
        )
        production_env["GOOGLE_APPLICATION_CREDENTIALS"] = str(key)
        proc = run_cli(*args[:-1], env=production_env)

    assert proc.returncode == 1, describe(proc)
    assert "cannot reach Google's token endpoint" in summary(proc)["error"]
    assert "oauth2.googleapis.com:443" in proc.stderr
    assert "unexpected" not in proc.stderr
