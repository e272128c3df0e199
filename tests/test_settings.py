from __future__ import annotations

import dataclasses
import ipaddress
import logging
from pathlib import Path

import pytest

from docdesk import settings as settings_module
from docdesk.errors import ConfigurationError
from docdesk.settings import DEFAULT_MAX_DOWNLOAD_BYTES, Settings

SECRET = "a-test-secret-of-at-least-32-bytes!"
SHORT_SECRET = "only-20-bytes-secret"
DS_URL = "https://ds.example.com"


@pytest.fixture(autouse=True)
def _fresh_short_secret_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # The warning is once per process; each test starts as a new process would.
    monkeypatch.setattr(settings_module, "_warned_short_secret", False)


def _env(**variables: str) -> dict[str, str]:
    return {f"DOCDESK_{name}": value for name, value in variables.items()}


class TestDefaults:
    def test_empty_environment_gives_the_documented_defaults(self) -> None:
        settings = Settings.from_env({})

        assert settings.data_dir == Path("docdesk-data")
        assert settings.public_url == "http://127.0.0.1:8000"
        assert settings.document_server_url is None
        assert settings.document_server_internal_url is None
        assert settings.uses_simulator
        assert settings.jwt_header == "Authorization"
        assert settings.database_url is None
        assert settings.storage_url is None
        assert settings.callback_allow == ()
        assert settings.max_download_bytes == DEFAULT_MAX_DOWNLOAD_BYTES
        assert settings.max_upload_bytes == DEFAULT_MAX_DOWNLOAD_BYTES

    def test_default_public_url_follows_host_and_port(self) -> None:
        settings = Settings.from_env({}, host="127.0.0.2", port=9001)

        assert settings.public_url == "http://127.0.0.2:9001"

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
    def test_wildcard_host_becomes_loopback_in_the_public_url(self, host: str) -> None:
        settings = Settings.from_env({}, host=host, port=8123)

        assert settings.public_url == "http://127.0.0.1:8123"

    def test_ipv6_host_is_bracketed_in_the_public_url(self) -> None:
        settings = Settings.from_env({}, host="::1", port=8123)

        assert settings.public_url == "http://[::1]:8123"

    def test_public_url_variable_wins_over_host_and_port(self) -> None:
        env = _env(PUBLIC_URL="https://docs.internal.example/desk")

        settings = Settings.from_env(env, host="127.0.0.2", port=9001)

        assert settings.public_url == "https://docs.internal.example/desk"

    def test_blank_values_count_as_unset(self) -> None:
        env = _env(PUBLIC_URL="  ", DATA_DIR="", JWT_HEADER=" ", CALLBACK_ALLOW="")

        settings = Settings.from_env(env)

        assert settings.public_url == "http://127.0.0.1:8000"
        assert settings.data_dir == Path("docdesk-data")
        assert settings.jwt_header == "Authorization"
        assert settings.callback_allow == ()

    def test_every_variable_is_read(self, tmp_path: Path) -> None:
        env = _env(
            DATA_DIR=str(tmp_path),
            PUBLIC_URL="http://127.0.0.1:9000",
            DOCUMENT_SERVER_URL=DS_URL,
            DOCUMENT_SERVER_INTERNAL_URL="http://127.0.0.1:8080",
            JWT_SECRET=SECRET,
            JWT_HEADER="AuthorizationJwt",
            DATABASE_URL="postgresql+psycopg://docdesk@127.0.0.1/docdesk",
            STORAGE_URL="s3://bucket/prefix?endpoint=http://127.0.0.1:9002",
            CALLBACK_ALLOW="127.0.0.0/8, ::1/128",
            MAX_DOWNLOAD_BYTES="1048576",
        )

        settings = Settings.from_env(env)

        assert settings.data_dir == tmp_path
        assert settings.public_url == "http://127.0.0.1:9000"
        assert settings.document_server_url == DS_URL
        assert settings.document_server_internal_url == "http://127.0.0.1:8080"
        assert not settings.uses_simulator
        assert settings.jwt_secret == SECRET
        assert settings.jwt_header == "AuthorizationJwt"
        assert settings.database_url == env["DOCDESK_DATABASE_URL"]
        assert settings.storage_url == env["DOCDESK_STORAGE_URL"]
        assert settings.callback_allow == (
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        )
        assert settings.max_download_bytes == 1_048_576
        assert settings.max_upload_bytes == 1_048_576

    def test_without_a_mapping_the_process_environment_is_read(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DOCDESK_PUBLIC_URL", "http://127.0.0.1:9555")
        monkeypatch.setenv("DOCDESK_JWT_SECRET", SECRET)
        monkeypatch.delenv("DOCDESK_DOCUMENT_SERVER_URL", raising=False)

        settings = Settings.from_env()

        assert settings.public_url == "http://127.0.0.1:9555"
        assert settings.jwt_secret == SECRET

    def test_settings_are_frozen(self) -> None:
        settings = Settings.from_env({})

        with pytest.raises(dataclasses.FrozenInstanceError):
            settings.public_url = "http://127.0.0.1:1"  # type: ignore[misc]

    def test_callback_allow_normalizes_host_bits(self) -> None:
        settings = Settings.from_env(_env(CALLBACK_ALLOW="127.1.2.3/8"))

        assert settings.callback_allow == (ipaddress.ip_network("127.0.0.0/8"),)


class TestSecret:
    def test_simulator_without_a_secret_gets_a_random_strong_one(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="docdesk.settings"):
            first = Settings.from_env({})
            second = Settings.from_env({})

        assert first.jwt_secret != second.jwt_secret
        assert len(first.jwt_secret.encode()) >= 32
        assert caplog.records == []

    def test_document_server_without_a_secret_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="DOCDESK_JWT_SECRET"):
            Settings.from_env(_env(DOCUMENT_SERVER_URL=DS_URL))

    @pytest.mark.parametrize("secret", ["", "   ", "secret", " secret\n"])
    @pytest.mark.parametrize("ds_url", [None, DS_URL])
    def test_empty_or_default_secret_is_refused_naming_the_variable(
        self, secret: str, ds_url: str | None
    ) -> None:
        env = _env(JWT_SECRET=secret)
        if ds_url is not None:
            env["DOCDESK_DOCUMENT_SERVER_URL"] = ds_url

        with pytest.raises(ConfigurationError, match="DOCDESK_JWT_SECRET"):
            Settings.from_env(env)

    def test_given_secret_is_used_with_a_document_server(self) -> None:
        env = _env(DOCUMENT_SERVER_URL=DS_URL, JWT_SECRET=SECRET)

        assert Settings.from_env(env).jwt_secret == SECRET

    def test_short_secret_warns_once_across_constructions(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        env = _env(DOCUMENT_SERVER_URL=DS_URL, JWT_SECRET=SHORT_SECRET)

        with caplog.at_level(logging.WARNING, logger="docdesk.settings"):
            Settings.from_env(env)
            Settings.from_env(env)
            Settings(jwt_secret=SHORT_SECRET)

        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "DOCDESK_JWT_SECRET" in warnings[0].getMessage()
        assert SHORT_SECRET not in warnings[0].getMessage()

    def test_strong_secret_does_not_warn(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="docdesk.settings"):
            Settings.from_env(_env(DOCUMENT_SERVER_URL=DS_URL, JWT_SECRET=SECRET))

        assert caplog.records == []

    def test_secret_is_not_in_the_repr(self) -> None:
        settings = Settings.from_env(_env(JWT_SECRET=SECRET))

        assert SECRET not in repr(settings)
        assert SECRET not in str(settings)


class TestRefusedValues:
    @pytest.mark.parametrize(
        "variable",
        ["PUBLIC_URL", "DOCUMENT_SERVER_URL", "DOCUMENT_SERVER_INTERNAL_URL"],
    )
    @pytest.mark.parametrize(
        "url",
        [
            "ftp://127.0.0.1/",
            "127.0.0.1:8000",
            "not a url",
            "http://",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:port",
            "http://[::1",
            "file://127.0.0.1/data",
        ],
    )
    def test_bad_url_is_refused_naming_the_variable(
        self, variable: str, url: str
    ) -> None:
        env = _env(JWT_SECRET=SECRET, **{variable: url})

        with pytest.raises(ConfigurationError, match=f"DOCDESK_{variable}"):
            Settings.from_env(env)

    @pytest.mark.parametrize(
        "cidrs",
        ["10.0.0.0/33", "nonsense", "127.0.0.0/8, x", "::1/129", "256.0.0.1"],
    )
    def test_bad_cidr_is_refused_naming_the_variable(self, cidrs: str) -> None:
        with pytest.raises(ConfigurationError, match="DOCDESK_CALLBACK_ALLOW"):
            Settings.from_env(_env(CALLBACK_ALLOW=cidrs))

    @pytest.mark.parametrize("value", ["abc", "1.5", "10MB", "1e6", "0", "-1"])
    def test_max_download_bytes_that_is_not_a_positive_integer_is_refused(
        self, value: str
    ) -> None:
        with pytest.raises(ConfigurationError, match="DOCDESK_MAX_DOWNLOAD_BYTES"):
            Settings.from_env(_env(MAX_DOWNLOAD_BYTES=value))

    def test_header_name_that_is_not_ascii_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="DOCDESK_JWT_HEADER"):
            Settings.from_env(_env(JWT_HEADER="Authorizati\u00f3n"))


class TestDocumentServerOrigins:
    def test_public_and_internal_urls_with_one_origin_give_one(self) -> None:
        env = _env(
            JWT_SECRET=SECRET,
            DOCUMENT_SERVER_URL="https://ds.example.com/",
            DOCUMENT_SERVER_INTERNAL_URL="https://DS.example.com:443/internal",
        )

        settings = Settings.from_env(env)

        assert settings.document_server_origins == ("https://ds.example.com:443",)

    def test_distinct_internal_url_is_added_after_the_public_one(self) -> None:
        env = _env(
            JWT_SECRET=SECRET,
            DOCUMENT_SERVER_URL="https://ds.example.com",
            DOCUMENT_SERVER_INTERNAL_URL="http://127.0.0.1:8080/",
        )

        settings = Settings.from_env(env)

        assert settings.document_server_origins == (
            "https://ds.example.com:443",
            "http://127.0.0.1:8080",
        )

    def test_default_http_port_is_made_explicit(self) -> None:
        env = _env(JWT_SECRET=SECRET, DOCUMENT_SERVER_URL="http://127.0.0.1/ds")

        settings = Settings.from_env(env)

        assert settings.document_server_origins == ("http://127.0.0.1:80",)

    def test_ipv6_origin_keeps_its_brackets(self) -> None:
        env = _env(JWT_SECRET=SECRET, DOCUMENT_SERVER_URL="http://[::1]:8080/")

        settings = Settings.from_env(env)

        assert settings.document_server_origins == ("http://[::1]:8080",)

    def test_simulator_links_come_from_the_public_url(self) -> None:
        settings = Settings.from_env({}, host="::1", port=8123)

        assert settings.document_server_origins == ("http://[::1]:8123",)


class TestResolvedUrls:
    def test_database_defaults_to_sqlite_in_the_data_dir(self, tmp_path: Path) -> None:
        settings = Settings.from_env(_env(DATA_DIR=str(tmp_path)))

        url = settings.resolved_database_url

        assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'docdesk.sqlite3'}"

    def test_storage_defaults_to_files_in_the_data_dir(self, tmp_path: Path) -> None:
        settings = Settings.from_env(_env(DATA_DIR=str(tmp_path)))

        url = settings.resolved_storage_url

        assert url == (tmp_path.resolve() / "blobs").as_uri()
        assert url.startswith("file:///")

    def test_relative_data_dir_is_made_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        settings = Settings.from_env({})

        assert str(tmp_path.resolve()) in settings.resolved_database_url
        assert settings.resolved_storage_url.startswith(tmp_path.resolve().as_uri())

    def test_explicit_urls_are_kept_as_given(self) -> None:
        env = _env(
            DATABASE_URL="postgresql+psycopg://docdesk@127.0.0.1/docdesk",
            STORAGE_URL="s3://bucket/prefix",
        )

        settings = Settings.from_env(env)

        assert settings.resolved_database_url == env["DOCDESK_DATABASE_URL"]
        assert settings.resolved_storage_url == "s3://bucket/prefix"


class TestSecretsAndCredentials:
    def test_a_secret_read_from_a_file_loses_its_final_newline(self) -> None:
        secret = "x" * 40

        settings = Settings.from_env({"DOCDESK_JWT_SECRET": secret + "\n"})

        assert settings.jwt_secret == secret

    def test_database_and_storage_urls_stay_out_of_the_repr(self) -> None:
        settings = Settings.from_env(
            {
                "DOCDESK_DATABASE_URL": "postgresql://u:hunter2@db/x",
                "DOCDESK_STORAGE_URL": "s3://b/p?secret_key=hunter3",
            }
        )

        assert "hunter" not in repr(settings)
